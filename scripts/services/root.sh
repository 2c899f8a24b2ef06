# Sourced by scripts/services.sh: the Debian roots that run the versions this machine's distribution
# does not offer: Debian 13's RabbitMQ 4.0 and PostgreSQL 17 in <state folder>/debian13, Debian 12's
# RabbitMQ 3.10 and PostgreSQL 15 in <state folder>/debian12. A root is made once with debootstrap
# (minbase, from EDC_DEBIAN_MIRROR) and apt-get, in <root>.partial, renamed when complete; the mark
# file, written last, lists the versions installed in it. A half-made root (a killed creation) is
# made again from scratch.
#
# Commands run in a root through in_root, each in a mount namespace of its own (unshare --mount) in
# which /proc, /dev and one state folder are bound into the root, the state folder at its own path,
# so that paths are the same inside and outside. The mounts live only as long as the processes in
# that namespace (a server, a CLI call): nothing is mounted in the machine's namespace, so a killed
# run, a reboot or a deleted root leaves nothing mounted behind. All of it needs root.

ROOT_MARK=.edc-services-root
ROOT_MIRROR=${EDC_DEBIAN_MIRROR:-http://deb.debian.org/debian}

# root_select RELEASE: ROOT_DIR, ROOT_PARTIAL, ROOT_LABEL and ROOT_PACKAGES of that release's root.
root_select() {
    case ${1:-} in
    bookworm | debian12) ROOT_RELEASE=bookworm ROOT_LABEL="Debian 12" ROOT_PACKAGES=(rabbitmq-server postgresql-15) ;;
    trixie | debian13) ROOT_RELEASE=trixie ROOT_LABEL="Debian 13" ROOT_PACKAGES=(rabbitmq-server postgresql-17) ;;
    *) die "no Debian root '${1:-}' (debian12 or debian13)" ;;
    esac
    ROOT_DIR=$SVC_DIR/debian${ROOT_LABEL#Debian }
    ROOT_PARTIAL=$ROOT_DIR.partial
}

# in_root DIR BIND CMD...: run CMD in the root DIR, with the folder BIND (made if missing; "" for
# none) bound at its own path. The environment passes through unchanged.
in_root() {
    local dir=$1 bind=$2
    shift 2
    need_root "a Debian root (chroot)"
    if [ -n "$bind" ]; then mkdir -p -- "$bind"; fi
    # shellcheck disable=SC2016 # (expanded by the inner shell)
    unshare --mount --propagation private -- /bin/bash -c '
        set -e
        umask 022
        root=$1 bind=$2
        shift 2
        mount --bind /proc "$root/proc"
        mount --rbind /dev "$root/dev"
        if [ -n "$bind" ]; then
            mkdir -p -- "$root$bind"
            mount --bind -- "$bind" "$root$bind"
        fi
        exec chroot "$root" "$@"' in_root "$dir" "$bind" "$@"
}

# The mount points at or below folder $1 in this mount namespace, deepest first.
mounts_under() {
    awk -v d="$1/" 'index($5 "/", d) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

# root_delete DIR: delete a root (complete or half-made). Anything still mounted in it (a root set
# up by hand, outside this script) is unmounted first; if that fails nothing is deleted, so /dev or
# a state folder bound into it cannot be emptied by mistake.
root_delete() {
    local dir=$1 m
    [ -e "$dir" ] || return 0
    while read -r m; do
        [ -n "$m" ] || continue
        log "unmounting $m (left mounted in the root)"
        umount -- "$m" 2>/dev/null || umount -l -- "$m" || true
    done < <(mounts_under "$dir")
    [ -z "$(mounts_under "$dir")" ] || die "still mounted under $dir: $(mounts_under "$dir" | tr '\n' ' ')"
    rm -rf --one-file-system -- "$dir"
}

# root_ensure RELEASE: make that root unless it is complete: debootstrap (minbase) into
# ROOT_PARTIAL, then its packages with apt-get inside it, none started by its package
# (policy-rc.d) and no default PostgreSQL cluster; the mark is written last and the folder renamed.
root_ensure() {
    root_select "$1"
    [ -e "$ROOT_DIR/$ROOT_MARK" ] && return 0
    need_root "making the $ROOT_LABEL root"
    local t0 t1 d log_file=$ROOT_DIR.log
    t0=$(now)
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap with apt-get (it makes the $ROOT_LABEL root)"
        apt_install debootstrap || die "apt-get install debootstrap failed"
    fi
    for d in "$ROOT_PARTIAL" "$ROOT_DIR"; do
        if [ -e "$d" ]; then
            log "deleting the half-made $ROOT_LABEL root $d (an earlier creation was interrupted)"
            root_delete "$d"
        fi
    done
    log "creating the $ROOT_LABEL root in $ROOT_DIR, once: debootstrap $ROOT_RELEASE from $ROOT_MIRROR, then apt-get install ${ROOT_PACKAGES[*]} in it (a few minutes, about 670 MB; log: $log_file)"
    : >"$log_file"
    # In a namespace of its own too: debootstrap mounts /proc and /sys in the target while it works.
    if ! unshare --mount --propagation private -- \
        debootstrap --variant=minbase "$ROOT_RELEASE" "$ROOT_PARTIAL" "$ROOT_MIRROR" >>"$log_file" 2>&1; then
        tail -n 20 "$log_file" >&2
        die "debootstrap failed (log: $log_file)"
    fi
    log "debootstrap done in $(since "$t0")"
    t1=$(now)
    printf '#!/bin/sh\nexit 101\n' >"$ROOT_PARTIAL/usr/sbin/policy-rc.d"
    chmod 755 "$ROOT_PARTIAL/usr/sbin/policy-rc.d"
    mkdir -p "$ROOT_PARTIAL/etc/postgresql-common"
    echo 'create_main_cluster = false' >"$ROOT_PARTIAL/etc/postgresql-common/createcluster.conf"
    cp /etc/resolv.conf "$ROOT_PARTIAL/etc/resolv.conf"
    if ! grep -qw localhost "$ROOT_PARTIAL/etc/hosts" 2>/dev/null; then
        printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >>"$ROOT_PARTIAL/etc/hosts"
    fi
    if ! DEBIAN_FRONTEND=noninteractive in_root "$ROOT_PARTIAL" "" /bin/sh -c '
        apt-get update -qq &&
        apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold "$@" &&
        apt-get clean' apt "${ROOT_PACKAGES[@]}" >>"$log_file" 2>&1; then
        tail -n 20 "$log_file" >&2
        die "apt-get in the $ROOT_LABEL root failed (log: $log_file)"
    fi
    in_root "$ROOT_PARTIAL" "" dpkg-query -W "${ROOT_PACKAGES[@]}" >"$ROOT_PARTIAL/$ROOT_MARK"
    mv -- "$ROOT_PARTIAL" "$ROOT_DIR"
    log "packages installed in $(since "$t1"): $(tr '\t\n' ' ;' <"$ROOT_DIR/$ROOT_MARK")"
    log "$ROOT_LABEL root ready in $(since "$t0")"
}

# cmd_root_create [debian12|debian13]: make that root now (default: Debian 13's).
cmd_root_create() {
    take_lock
    need_root "root-create"
    root_ensure "${1:-trixie}"
    log "$ROOT_LABEL root: $ROOT_DIR ($(tr '\t\n' ' ;' <"$ROOT_DIR/$ROOT_MARK"))"
}

# cmd_root_remove [debian12|debian13]: stop the servers that run from that root (default: Debian
# 13's), then delete it. Their state (rabbitmq-4.0/ and pg17/, or rabbit1/ and pg/) stays.
cmd_root_remove() {
    local release v
    take_lock
    need_root "root-remove"
    root_select "${1:-trixie}"
    release=$ROOT_RELEASE
    for v in $RABBIT_VERSIONS; do
        [ "$(root_release rabbitmq "$v" 2>/dev/null)" = "$release" ] || continue
        (
            rabbit_version "$v"
            if [ "$RABBIT_ROOT" = "$release" ] && rabbit_installed; then rabbit_stop_nodes; fi
        )
    done
    for v in $PG_VERSIONS; do
        [ "$(root_release postgres "$v" 2>/dev/null)" = "$release" ] || continue
        (
            pg_version "$v"
            if [ "$PG_ROOT" = "$release" ] && pg_installed; then pg_stop fast; fi
        )
    done
    root_select "$release"
    root_delete "$ROOT_PARTIAL"
    if [ -e "$ROOT_DIR" ]; then
        log "deleting the $ROOT_LABEL root $ROOT_DIR"
        root_delete "$ROOT_DIR"
    fi
    log "no $ROOT_LABEL root left (the servers' state in $SVC_DIR stays)"
}
