# Sourced (not run) by qemu-run.sh and uml-run.sh, which share its options and job contract.
# Parses the options into mem, timeout, disks and envs, leaving CMD [ARGS...] in "$@".
# shellcheck shell=bash
mem=1G timeout=900 disks=() envs=()
while getopts m:t:d:e: o; do
	case $o in m) mem=$OPTARG ;; t) timeout=$OPTARG ;; d) disks+=("$OPTARG") ;; e) envs+=("$OPTARG") ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "usage: $0 [-m MEM] [-t SECS] [-d FILE]... [-e VAR]... CMD..." >&2; exit 2; }

# write_job FILE CMD [ARGS...]: the job script: same cwd, same command line, selected env
# passed through (the -e VARs, and CI, NODE_*, TEST_*, DEBUG).
write_job() {
	local file=$1 v
	shift
	{
		printf 'cd %q || exit 254\n' "$PWD"
		for v in "${envs[@]}" $(compgen -e | grep -E '^(CI|NODE_[A-Z_]*|TEST_[A-Z_]*|DEBUG)$'); do
			[ -n "${!v+x}" ] && printf 'export %s=%q\n' "$v" "${!v}"
		done
		printf 'exec'; printf ' %q' "$@"; printf '\n'
	} >"$file"
}

# finish_job JOBDIR STATUS LABEL LOG: exits with the job's status or, when the guest never
# wrote one, reports the runner's STATUS, shows the LABEL log file LOG and exits 255.
finish_job() {
	if [ -s "$1/rc" ]; then exit "$(cat "$1/rc")"; fi
	echo "$(basename "$0"): exit status $2$([ "$2" = 124 ] && echo " (timed out after $timeout s)")" >&2
	echo "$(basename "$0" .sh): guest did not finish the job; $3 log:" >&2
	cat "$4" >&2
	exit 255
}
