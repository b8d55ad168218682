/** The Convoy version, printed by `convoy --version` as `Convoy version v<VERSION>`. */
export const VERSION = "0.6.0";
