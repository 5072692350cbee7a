#!/usr/bin/env bash
# verify-systemd.sh: check the systemd files in systemd/ without a running
# systemd (CI runs in a Debian 12 container whose PID 1 is not systemd).
#
#   scripts/verify-systemd.sh [PAYMENTSD_BINARY]
#
# 1. `systemd-analyze verify` on paymentsd.socket, paymentsd-http.socket and paymentsd.service.
#    verify insists that ExecStart= names an existing executable, so the units
#    are copied to a temporary directory and ExecStart= is pointed at
#    PAYMENTSD_BINARY (default /usr/local/bin/paymentsd; the Makefile passes
#    the freshly built .build/debug/paymentsd). User=/Group=/SocketUser= are
#    only resolved when the units really start, so the paymentsd user need not
#    exist here. Any message about our units fails the script.
# 2. sysusers and tmpfiles snippets, applied to a scratch root directory
#    (--root=), and a check that every user and group the units name is
#    created by paymentsd.sysusers. The tmpfiles part needs root (chown); it is
#    skipped otherwise.
# 3. `systemd-analyze security --offline=true` on the service: prints the
#    overall exposure line and the items still open. The score never fails the
#    script; only a failure to analyze does.
#
# Needs: systemd-analyze, systemd-sysusers, systemd-tmpfiles (Debian package
# `systemd`; tested with 252).
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
src="$repo/systemd"
bin=${1:-/usr/local/bin/paymentsd}

die() {
    printf 'verify-systemd: FAIL: %s\n' "$*" >&2
    exit 1
}
say() { printf 'verify-systemd: %s\n' "$*"; }
indent() { sed 's/^/    /'; }

for tool in systemd-analyze systemd-sysusers systemd-tmpfiles; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian: apt-get install -y systemd)"
done
for f in paymentsd.socket paymentsd-http.socket paymentsd.service paymentsd.sysusers paymentsd.tmpfiles; do
    [[ -f $src/$f ]] || die "missing $src/$f"
done

# ExecStart= must be absolute; the Makefile passes a path relative to the repo.
[[ $bin == /* ]] || bin="$PWD/$bin"
[[ -f $bin && -x $bin ]] || die "$bin is not an executable file (build it, or pass another binary as \$1)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/verify-systemd.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
# Plain output, no pager, so that the lines below can be matched.
export SYSTEMD_COLORS=0 SYSTEMD_PAGER=cat SYSTEMD_LESS=

units="$tmp/units"
mkdir "$units"
cp "$src/paymentsd.socket" "$src/paymentsd-http.socket" "$units/"

# Rewrite the one ExecStart=/usr/local/bin/paymentsd line, keeping any
# arguments. Quote the path for systemd: \ and " are escaped inside "...",
# % is doubled (specifiers are expanded in the path; $ variables are not).
exe=${bin//\\/\\\\}
exe=${exe//\"/\\\"}
exe=${exe//%/%%}
EXE="\"$exe\"" awk '
    /^ExecStart=\/usr\/local\/bin\/paymentsd([[:space:]]|$)/ {
        sub(/^ExecStart=\/usr\/local\/bin\/paymentsd/, "")
        print "ExecStart=" ENVIRON["EXE"] $0
        n++
        next
    }
    { print }
    END { exit n == 1 ? 0 : 3 }
' "$src/paymentsd.service" >"$units/paymentsd.service" ||
    die "paymentsd.service must have exactly one line 'ExecStart=/usr/local/bin/paymentsd ...'"
say "ExecStart for the check: $(grep '^ExecStart=' "$units/paymentsd.service")"

# ---------------------------------------------------------------- 1. verify
# --man=no: no man pages to look up (Documentation= is not checked against
# the man database, which a slim container does not have).
# --generators=no: generators are for booting, not for checking two files.
# The default --recursive-errors=yes also loads what the units pull in
# (sockets.target, sysinit.target, ...); messages about those belong to the
# distribution, are shown, but do not fail the check.
say "systemd-analyze verify (systemd $(systemd-analyze --version | awk 'NR==1{print $2}'))"
set +e
out=$(cd "$units" && systemd-analyze verify --man=no --generators=no \
    "$units/paymentsd.socket" "$units/paymentsd-http.socket" "$units/paymentsd.service" 2>&1)
rc=$?
set -e
if [[ -n $out ]]; then
    printf '%s\n' "$out" | indent
fi
ours=$(printf '%s\n' "$out" | grep -F -e paymentsd.service -e paymentsd.socket -e paymentsd-http.socket -e "$units" || true)
if [[ -n $ours ]]; then
    die "systemd-analyze verify reported problems with our units (above)"
fi
if ((rc != 0)); then
    say "note: systemd-analyze verify exited $rc because of units outside this project (above); not counted"
fi
say "verify: OK, no warnings about paymentsd.socket, paymentsd-http.socket or paymentsd.service"

# ------------------------------------------------- 2. sysusers and tmpfiles
root="$tmp/root"
mkdir -p "$root/etc"
out=$(systemd-sysusers --root="$root" "$src/paymentsd.sysusers" 2>&1) ||
    { printf '%s\n' "$out" | indent; die "systemd-sysusers rejected paymentsd.sysusers"; }
bad=$(printf '%s\n' "$out" | grep -v -E "^Creating (user|group) " || true)
[[ -z $bad ]] || { printf '%s\n' "$bad" | indent; die "systemd-sysusers warned about paymentsd.sysusers"; }

# Every name the units use must come from paymentsd.sysusers.
svc="$units/paymentsd.service"
sock="$units/paymentsd.socket"
value() { sed -n "s/^$1=//p" "$2" | tail -n 1; }
user=$(value User "$svc")
groups=("$(value Group "$svc")" "$(value SocketGroup "$sock")")
sock_user=$(value SocketUser "$sock")
for v in PAYMENTSD_ALLOW_GIDS PAYMENTSD_ADMIN_GIDS; do
    list=$(sed -n "s/^Environment=$v=//p" "$svc" | tail -n 1)
    IFS=, read -r -a names <<<"$list"
    for g in "${names[@]}"; do
        [[ $g =~ ^[0-9]+$ ]] || groups+=("$g")
    done
done
for u in "$user" "$sock_user"; do
    grep -q "^$u:" "$root/etc/passwd" || die "user '$u' used by the units is not created by paymentsd.sysusers"
done
for g in "${groups[@]}"; do
    grep -q "^$g:" "$root/etc/group" || die "group '$g' used by the units is not created by paymentsd.sysusers"
done
say "sysusers: OK (users: $user; groups: $(printf '%s\n' "${groups[@]}" | sort -u | paste -sd ' '))"

# Crash reports carry no memory: the backtracer sanitised, without registers, never interactive.
backtrace=$(sed -n 's/^Environment=SWIFT_BACKTRACE=//p' "$svc" | tail -n 1)
for want in sanitize=yes registers=none interactive=no; do
    [[ ,$backtrace, == *,$want,* ]] || die "paymentsd.service must set SWIFT_BACKTRACE with $want (got '$backtrace')"
done
# Exit statuses that a restart cannot fix are not restarted.
for status in 75 78; do
    [[ " $(value RestartPreventExitStatus "$svc") " == *" $status "* ]] ||
        die "paymentsd.service must not restart on exit status $status (RestartPreventExitStatus=)"
done
say "crash reports and restarts: OK (SWIFT_BACKTRACE=$backtrace)"

if ((EUID == 0)); then
    out=$(systemd-tmpfiles --root="$root" --create "$src/paymentsd.tmpfiles" 2>&1) ||
        { printf '%s\n' "$out" | indent; die "systemd-tmpfiles failed on paymentsd.tmpfiles"; }
    [[ -z $out ]] || { printf '%s\n' "$out" | indent; die "systemd-tmpfiles warned about paymentsd.tmpfiles"; }
    # Owner names looked up in the scratch root's files, not the host's (the
    # scratch root has no root entries: id 0 is root).
    name_of() {
        awk -F: -v id="$2" '$3 == id { print $1; found = 1; exit }
            END { if (!found) print (id == 0 ? "root" : id) }' "$root/etc/$1"
    }
    while read -r path want; do
        read -r mode uid gid < <(stat -c '%a %u %g' "$root$path")
        got="$mode $(name_of passwd "$uid"):$(name_of group "$gid")"
        [[ $got == "$want" ]] || die "tmpfiles: $path is '$got', expected '$want'"
    done <<'EOF'
/run/paymentsd 755 root:root
/etc/paymentsd 750 root:paymentsd
/etc/paymentsd/credentials 700 root:root
EOF
    # The socket unit creates /run/paymentsd itself when tmpfiles has not run;
    # both must agree on the mode.
    dmode=$(value DirectoryMode "$sock")
    [[ ${dmode#0} == 755 ]] || die "paymentsd.socket DirectoryMode=$dmode disagrees with tmpfiles' 0755 for /run/paymentsd"
    say "tmpfiles: OK"
else
    say "tmpfiles: skipped (needs root to chown in the scratch root)"
fi

# ------------------------------------------------------------- 3. security
set +e
out=$(systemd-analyze security --offline=true --no-pager "$svc" 2>&1)
rc=$?
set -e
line=$(printf '%s\n' "$out" | grep -F 'Overall exposure level' || true)
if ((rc != 0)) || [[ -z $line ]]; then
    printf '%s\n' "$out" | indent
    die "systemd-analyze security could not analyze paymentsd.service"
fi
say "security: items still open (badness), all by design, see comments in paymentsd.service:"
printf '%s\n' "$out" | grep '^✗' | sed -E 's/  +/  /g' | indent || true
say "security: ${line#→ }"
say "all checks passed"
