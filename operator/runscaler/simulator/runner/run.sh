#!/bin/sh
# The runscaler simulator's stand-in for the GitHub Actions runner: the life of an ephemeral
# runner in POSIX sh and busybox applets. It reads ACTIONS_RUNNER_INPUT_JITCONFIG as the real
# runner does (and removes it from its environment), asks the simulator named by the config's
# ServerUrlV2 for one job, waits while the job "runs", reports the result and exits 0.
#
# Runs in the runscaler-sim-runner image (FROM scratch + busybox) and as a plain local process
# (`sh run.sh`), using `busybox APPLET` when busybox is installed, since the host's own wget
# and base64 may differ or be absent.
#
# Exit codes: 0 job done (or cancelled), 1 missing or invalid JIT config, 2 the simulator no
# longer knows this runner or its job, 3 the simulator unreachable for too long, 143 stopped.
#
# Environment: RUNSCALER_SIM_RUNNER_RETRY  seconds to keep retrying an unreachable simulator
#              (default 60); RUNSCALER_SIM_RUNNER_POLL  long-poll wait asked for (default 20).
set -u

retry_for=${RUNSCALER_SIM_RUNNER_RETRY:-60}
poll=${RUNSCALER_SIM_RUNNER_POLL:-20}

if command -v busybox >/dev/null 2>&1; then
    bb=busybox
elif [ -x /bin/busybox ]; then
    bb=/bin/busybox
else
    bb=
fi

say() { printf 'runner: %s\n' "$*"; }
die() {
    code=$1
    shift
    printf 'runner: %s\n' "$*" >&2
    exit "$code"
}

[ -n "$bb" ] || command -v wget >/dev/null 2>&1 ||
    die 1 "neither busybox nor wget is installed: install busybox (Debian: busybox-static)"

config=${ACTIONS_RUNNER_INPUT_JITCONFIG-}
unset ACTIONS_RUNNER_INPUT_JITCONFIG
[ -n "$config" ] || die 1 "ACTIONS_RUNNER_INPUT_JITCONFIG is not set: give the runner the encodedJITConfig from generatejitconfig"

b64d() { $bb base64 -d 2>/dev/null; }
# The value of "KEY":"VALUE" (or "KEY":NUMBER) in one line of JSON.
json_string() { $bb sed -n "s/.*\"$1\" *: *\"\([^\"]*\)\".*/\1/p"; }
json_number() { $bb sed -n "s/.*\"$1\" *: *\([0-9][0-9]*\).*/\1/p"; }

files=$(printf '%s' "$config" | b64d) || files=
config=
runner_file=$(printf '%s' "$files" | json_string '\.runner' | b64d) || runner_file=
credentials_file=$(printf '%s' "$files" | json_string '\.credentials' | b64d) || credentials_file=
id=$(printf '%s' "$runner_file" | json_number AgentId)
name=$(printf '%s' "$runner_file" | json_string AgentName)
url=$(printf '%s' "$runner_file" | json_string ServerUrlV2)
client=$(printf '%s' "$credentials_file" | json_string clientId)
case "$url" in http://* | https://*) ;; *) url= ;; esac
if [ -z "$id" ] || [ -z "$url" ] || [ -z "$client" ]; then
    die 1 "ACTIONS_RUNNER_INPUT_JITCONFIG is not a valid JIT config (no AgentId, ServerUrlV2 or clientId in it): pass encodedJITConfig unchanged"
fi

# Replies land in a file that is unlinked at once: nothing is left behind, even after SIGKILL
# (read back through /dev/fd/3, which reopens it from the start).
reply_file=$($bb mktemp "${TMPDIR:-/tmp}/sim-runner.XXXXXX") ||
    die 1 "cannot create a temporary file in ${TMPDIR:-/tmp}: set TMPDIR to a writable directory"
exec 3>"$reply_file"
$bb rm -f "$reply_file"

child=
stop() {
    [ -z "$child" ] || kill "$child" 2>/dev/null
    say "stopped by a signal"
    exit 143
}
trap stop TERM INT

# One HTTP request (GET, or POST with $2 as the body) into $reply; fails on a network error.
# wget runs in the background so a signal stops the runner at once, not after the long poll;
# the simulator bounds every long poll, so wget needs no timeout of its own.
fetch() {
    if [ $# -gt 1 ]; then
        $bb wget -q -Y off -O /dev/fd/3 --header "Authorization: Bearer $client" \
            --post-data "$2" "$1" 2>/dev/null &
    else
        $bb wget -q -Y off -O /dev/fd/3 --header "Authorization: Bearer $client" "$1" 2>/dev/null &
    fi
    child=$!
    wait "$child"
    status=$?
    child=
    [ "$status" -eq 0 ] || return "$status"
    reply=$($bb cat /dev/fd/3)
}

# The request, retried while the simulator cannot be reached (restarting), for a bounded time.
request() {
    failing_since=
    until fetch "$@"; do
        now=$($bb date +%s)
        if [ -z "$failing_since" ]; then
            failing_since=$now
            say "cannot reach the simulator at $url: retrying for ${retry_for}s"
        fi
        [ $((now - failing_since)) -lt "$retry_for" ] ||
            die 3 "the simulator at $url did not answer for ${retry_for}s: giving up"
        $bb sleep 1
    done
}

answer() { printf '%s\n' "$reply" | $bb sed -n "s/^$1=//p"; }

base=${url%/}/runners/$id
say "$name ($id) listening for a job at $url"
while :; do
    request "$base/job?wait=$poll"
    state=$(answer state)
    case $state in
        assigned) break ;;
        waiting) ;;
        gone) die 2 "$name ($id) is not registered with the simulator (removed, or the simulator restarted)" ;;
        *) die 2 "the simulator refused $name ($id): state=$state" ;;
    esac
done

job=$(answer job)
say "running job $job for $(answer duration)s"
while :; do
    request "$base/jobs/$job?wait=$poll"
    state=$(answer state)
    case $state in
        running) ;;
        finished | canceled) break ;;
        gone) die 2 "job $job of $name ($id) is gone (its runner or scale set was removed)" ;;
        *) die 2 "unexpected answer about job $job: state=$state" ;;
    esac
done

result=$(answer result)
request "$base/jobs/$job/result" "result=$result"
state=$(answer state)
[ "$state" = completed ] || die 2 "the simulator did not take the result of job $job: state=$state"
say "job $job finished: $result"
exit 0
