#!/usr/bin/env bash
# Build a real Open Policy Agent server binary from Debian Go source packages
# and cache it, so the test suite can talk to a genuine OPA over HTTP.
#
# No OPA binary is packaged for Debian, but sid ships OPA's Go sources
# (golang-github-open-policy-agent-opa-dev) together with every Go library it
# imports and a current Go toolchain. We fetch that closure with a private apt
# state (the system's apt setup is never modified), unpack it without
# installing, and build OPA in GOPATH mode.
#
# Usage: tests/tools/build-opa.sh
#   Environment: AUTHZ_LEDGER_CACHE (default: $HOME/.cache/authz-ledger)
#   Output: the absolute path of the opa binary as the last line of stdout;
#           all progress goes to stderr.
#   Exit status: 0 on success, non-zero (with the failing step named on
#           stderr) on any failure. There is no silent fallback.
set -euo pipefail
set -o errtrace

CACHE_ROOT="${AUTHZ_LEDGER_CACHE:-$HOME/.cache/authz-ledger}"
OPA_DIR="$CACHE_ROOT/opa"
OPA_BIN="$OPA_DIR/bin/opa"
WORK="$OPA_DIR/work"

# Packages whose Go closure we need: OPA's sources and the Go toolchain.
ROOT_PACKAGES=(golang-github-open-policy-agent-opa-dev golang-go)
# OPA 1.4.x uses the pre-1.0 tablewriter API; sid carries tablewriter 1.x,
# bookworm still has the compatible 0.0.5.
TABLEWRITER_PKG=golang-github-olekukonko-tablewriter-dev
TABLEWRITER_VERSION_RE='^0\.0\.5'
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

STEP="startup"
log() { printf 'build-opa: %s\n' "$*" >&2; }
die() { printf 'build-opa: ERROR in step "%s": %s\n' "$STEP" "$*" >&2; exit 1; }
step() { STEP="$1"; log "== $1"; }
on_err() {
    local rc=$?
    printf 'build-opa: FAILED in step "%s" (exit %s, line %s); work dir kept at %s\n' \
        "$STEP" "$rc" "${BASH_LINENO[0]}" "$WORK" >&2
    exit "$rc"
}
trap on_err ERR

# Run a noisy command with its output in a per-step log; on failure show the
# tail of that log so the cause is visible without digging.
run_logged() {
    local name="$1"; shift
    local logfile="$WORK/logs/$name.log"
    mkdir -p "$WORK/logs"
    if ! "$@" >"$logfile" 2>&1; then
        printf 'build-opa: command failed in step "%s": %s\n' "$STEP" "$*" >&2
        printf 'build-opa: last lines of %s:\n' "$logfile" >&2
        tail -n 40 "$logfile" >&2 || true
        die "see $logfile"
    fi
}

# A cached binary is only trusted if it actually runs.
cached_ok() {
    [[ -x "$OPA_BIN" ]] && "$OPA_BIN" version >/dev/null 2>&1
}

# ---------------------------------------------------------------------------
# Fast path: already built.
if cached_ok; then
    printf '%s\n' "$OPA_BIN"
    exit 0
fi

mkdir -p "$OPA_DIR/bin"
# Serialise concurrent invocations (e.g. parallel test workers) so only one
# of them builds; the others wait and then take the fast path.
exec 9>"$OPA_DIR/.lock"
step "acquire build lock"
flock 9 || die "cannot lock $OPA_DIR/.lock"
if cached_ok; then
    printf '%s\n' "$OPA_BIN"
    exit 0
fi

start_ts=$(date +%s)

step "check prerequisites"
[[ "$(id -u)" -eq 0 ]] || die "must run as root (apt-get update of the system lists may be needed)"
for tool in apt-get apt-cache dpkg-deb flock awk sort; do
    command -v "$tool" >/dev/null 2>&1 || die "required tool '$tool' not found"
done
[[ -r "$KEYRING" ]] || die "Debian archive keyring $KEYRING missing (package debian-archive-keyring)"

# ---------------------------------------------------------------------------
step "find Debian mirror in the system apt configuration"
# Use whatever mirror this machine already uses (proxy/mirror setups differ
# between machines), skipping the security archive, which has no sid.
MIRROR=""
if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
    MIRROR=$(awk 'tolower($1) == "uris:" {
                      for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit }
                  }' /etc/apt/sources.list.d/debian.sources)
fi
if [[ -z "$MIRROR" && -r /etc/apt/sources.list ]]; then
    MIRROR=$(awk '$1 == "deb" {
                      for (i = 2; i <= NF; i++) {
                          if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; continue }
                          if ($i !~ /security/) print $i
                          break
                      }
                  }' /etc/apt/sources.list | head -n 1)
fi
[[ -n "$MIRROR" ]] || die "no Debian mirror URI found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
log "mirror: $MIRROR"

# ---------------------------------------------------------------------------
step "prepare private apt state"
# Start from a clean work dir: a previous failed attempt may have left a
# half-extracted tree behind.
rm -rf "$WORK"
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" \
         "$WORK/debs" "$WORK/tablewriter-deb" "$WORK/root" "$WORK/logs"
printf 'deb [signed-by=%s] %s sid main\n' "$KEYRING" "$MIRROR" >"$WORK/apt/sid.list"
# Every piece of state apt would read or write points into $WORK, so the
# system's sources, lists, package cache and pinning stay untouched.
APT_OPTS=(
    -o "Dir::Etc::SourceList=$WORK/apt/sid.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::Etc::Preferences=/dev/null"
    -o "Dir::Etc::PreferencesParts=/dev/null"
    -o "Dir::State::Lists=$WORK/apt/lists"
    -o "Dir::Cache=$WORK/apt/cache"
    -o "APT::Default-Release="
    # The cache usually lives under root's home, which the unprivileged _apt
    # download user cannot reach; integrity still comes from the signed
    # Release files.
    -o "APT::Sandbox::User=root"
)

step "apt-get update (private sid lists)"
run_logged apt-update apt-get "${APT_OPTS[@]}" update

# ---------------------------------------------------------------------------
step "resolve golang* dependency closure"
# Only Go source packages and the toolchain are needed: libraries are built
# from source, so runtime/C dependencies are irrelevant.
run_logged apt-depends apt-cache "${APT_OPTS[@]}" depends --recurse \
    --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances \
    "${ROOT_PACKAGES[@]}"
mapfile -t PKGS < <(grep -E '^golang' "$WORK/logs/apt-depends.log" | sort -u)
for p in "${ROOT_PACKAGES[@]}"; do
    grep -qx "$p" <<<"$(printf '%s\n' "${PKGS[@]}")" || die "package $p not in the resolved closure"
done
log "closure: ${#PKGS[@]} packages"

step "download ${#PKGS[@]} packages from sid"
# apt-get download verifies each .deb against the signed sid Release file.
(cd "$WORK/debs" && run_logged apt-download apt-get "${APT_OPTS[@]}" -q download "${PKGS[@]}")
n_debs=$(find "$WORK/debs" -maxdepth 1 -name '*.deb' | wc -l)
[[ "$n_debs" -eq "${#PKGS[@]}" ]] || die "expected ${#PKGS[@]} .deb files, got $n_debs"
log "downloaded $(du -sh "$WORK/debs" | cut -f1)"

step "unpack packages (dpkg -x, no install)"
for deb in "$WORK"/debs/*.deb; do
    dpkg-deb -x "$deb" "$WORK/root" || die "dpkg-deb -x failed for $(basename "$deb")"
done

# ---------------------------------------------------------------------------
step "fetch tablewriter 0.0.5 from bookworm"
# The system's own lists (bookworm) carry the old API OPA needs. Refresh
# them only if the package is not known yet.
tw_version() {
    apt-cache madison "$TABLEWRITER_PKG" 2>/dev/null \
        | awk -F'|' '{gsub(/ /, "", $2); print $2}' \
        | grep -E "$TABLEWRITER_VERSION_RE" | sort -V | tail -n 1 || true
}
TW_VER=$(tw_version)
if [[ -z "$TW_VER" ]]; then
    log "$TABLEWRITER_PKG 0.0.5 not in system lists; running apt-get update"
    run_logged system-apt-update apt-get update
    TW_VER=$(tw_version)
fi
[[ -n "$TW_VER" ]] || die "no $TABLEWRITER_PKG version matching $TABLEWRITER_VERSION_RE in the system apt lists"
log "$TABLEWRITER_PKG=$TW_VER"
(cd "$WORK/tablewriter-deb" && run_logged tw-download apt-get -o APT::Sandbox::User=root -q download "$TABLEWRITER_PKG=$TW_VER")
tw_deb=$(find "$WORK/tablewriter-deb" -maxdepth 1 -name '*.deb' | head -n 1)
[[ -n "$tw_deb" ]] || die "tablewriter .deb not downloaded"

step "replace tablewriter sources with 0.0.5"
TW_SRC_REL=usr/share/gocode/src/github.com/olekukonko/tablewriter
dpkg-deb -x "$tw_deb" "$WORK/tablewriter-root"
[[ -d "$WORK/tablewriter-root/$TW_SRC_REL" ]] || die "$TW_SRC_REL missing in $(basename "$tw_deb")"
rm -rf "${WORK:?}/root/$TW_SRC_REL"
mkdir -p "$(dirname "$WORK/root/$TW_SRC_REL")"
cp -a "$WORK/tablewriter-root/$TW_SRC_REL" "$WORK/root/$TW_SRC_REL"

# ---------------------------------------------------------------------------
step "locate Go toolchain"
# The sid Go version moves; use the newest go-* tree that has a go binary.
GOROOT_DIR=""
while read -r d; do
    if [[ -x "$d/bin/go" ]]; then GOROOT_DIR="$d"; fi
done < <(ls -d "$WORK"/root/usr/lib/go-* 2>/dev/null | sort -V)
[[ -n "$GOROOT_DIR" ]] || die "no usr/lib/go-*/bin/go in the unpacked tree"
log "GOROOT: $GOROOT_DIR ($("$GOROOT_DIR/bin/go" version 2>&1 || true))"

step "go build github.com/open-policy-agent/opa"
# GOPATH mode against the unpacked Debian sources: no module downloads
# (GOPROXY=off), no toolchain switching, no user go.env, a private build
# cache that is thrown away with the work dir. CGO is off for a static,
# self-contained binary.
TMP_BIN="$OPA_DIR/bin/.opa.tmp.$$"
rm -f "$TMP_BIN"
(
    cd "$WORK"
    export GOROOT="$GOROOT_DIR" \
           GOPATH="$WORK/root/usr/share/gocode" \
           GO111MODULE=off GOTOOLCHAIN=local GOPROXY=off GOFLAGS= GOENV=off \
           GOCACHE="$WORK/gocache" CGO_ENABLED=0
    run_logged go-build "$GOROOT_DIR/bin/go" build -trimpath -o "$TMP_BIN" github.com/open-policy-agent/opa
)
[[ -x "$TMP_BIN" ]] || die "go build produced no binary"

step "check built binary"
version_out=$("$TMP_BIN" version 2>&1) || { rm -f "$TMP_BIN"; die "'opa version' failed: $version_out"; }
grep -q '^Version: ' <<<"$version_out" || { rm -f "$TMP_BIN"; die "unexpected 'opa version' output: $version_out"; }
log "$(head -n 1 <<<"$version_out")"

step "install into cache"
# Atomic replace: readers only ever see a complete binary.
mv -f "$TMP_BIN" "$OPA_BIN"

step "clean up"
# The unpacked tree, the .debs and the private apt lists are several hundred
# MB and not needed once the binary exists.
rm -rf "$WORK"

log "built in $(( $(date +%s) - start_ts ))s"
printf '%s\n' "$OPA_BIN"
