/** Option keys passed between the daemon and drivers, with the same string values as Convoy's convoydriver package. */
export const OPT_MOUNT_POINT = "MountPoint";
export const OPT_SIZE = "Size";
export const OPT_FORMAT = "Format";
export const OPT_VOLUME_UUID = "VolumeUUID";
export const OPT_VOLUME_NAME = "VolumeName";
export const OPT_VOLUME_ID = "VolumeDriverID";
export const OPT_VOLUME_TYPE = "VolumeType";
export const OPT_VOLUME_IOPS = "VolumeIOPS";
/** Our addition: provisioned throughput in MiB/s (EBS gp3); passed only when given. */
export const OPT_VOLUME_THROUGHPUT = "VolumeThroughput";
export const OPT_VOLUME_CREATED_TIME = "VolumeCreatedAt";
export const OPT_SNAPSHOT_NAME = "SnapshotName";
export const OPT_SNAPSHOT_CREATED_TIME = "SnapshotCreatedAt";
export const OPT_FILESYSTEM = "FileSystem";
export const OPT_BACKUP_URL = "BackupURL";
export const OPT_REFERENCE_ONLY = "ReferenceOnly";
export const OPT_PREPARE_FOR_VM = "PrepareForVM";
/** Convoy v0.5.2 passes the S3 endpoint under this key (not in the seed's constant list). */
export const OPT_ENDPOINT_URL = "EndpointURL";
/** Our addition: the block compression a new backup store should use ("gzip" or "zstd"). */
export const OPT_COMPRESSION = "Compression";
