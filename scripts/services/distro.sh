# Sourced by scripts/services.sh: which versions this machine's distribution offers, where each
# chosen version comes from (this machine's packages or a Debian root), the `plan` that says so,
# and the installation itself.
#
# The distributions the scripts know, and the versions each one's own packages bring (its "row"):
#   Debian 12 (bookworm)   rabbitmq-server 3.10   postgresql-15
#   Debian 13 (trixie)     rabbitmq-server 4.0    postgresql-17
#   Ubuntu 22.04 (jammy)   rabbitmq-server 3.9    postgresql-14
#   Ubuntu 24.04 (noble)   rabbitmq-server 3.12   postgresql-16
# A derivative counts as the release it names (UBUNTU_CODENAME, VERSION_CODENAME). Debian 12's and
# Debian 13's versions also run on any of these machines from a Debian root (root.sh).

RABBIT_VERSIONS="3.9 3.10 3.12 4.0"
PG_VERSIONS="14 15 16 17"

# release_row CODENAME: "RABBITMQ POSTGRES NAME" of a release the scripts know.
release_row() {
    case $1 in
    bookworm) echo "3.10 15 Debian 12" ;;
    trixie) echo "4.0 17 Debian 13" ;;
    jammy) echo "3.9 14 Ubuntu 22.04" ;;
    noble) echo "3.12 16 Ubuntu 24.04" ;;
    *) return 1 ;;
    esac
}

# root_release rabbitmq|postgres V: the Debian release whose root runs version V, if any.
root_release() {
    case $1/$2 in
    rabbitmq/3.10 | postgres/15) echo bookworm ;;
    rabbitmq/4.0 | postgres/17) echo trixie ;;
    *) return 1 ;;
    esac
}

# host_read FILE: read an os-release file (never sourced: it is data). Sets HOST_PRETTY, HOST_APT
# (1 on Debian, Ubuntu and their derivatives), and, on a release the scripts know, HOST_NAME,
# HOST_RABBITMQ and HOST_POSTGRES (all empty otherwise).
host_read() {
    local file=$1 key value id='' like='' codename='' ubuntu='' version_id='' row
    [ -r "$file" ] || die "cannot read $file: which distribution is this?"
    HOST_PRETTY='' HOST_APT=0 HOST_NAME='' HOST_RABBITMQ='' HOST_POSTGRES=''
    while IFS='=' read -r key value || [ -n "$key" ]; do
        value=${value#[\"\']}
        value=${value%[\"\']}
        case $key in
        ID) id=$value ;;
        ID_LIKE) like=$value ;;
        VERSION_ID) version_id=$value ;;
        VERSION_CODENAME) codename=$value ;;
        UBUNTU_CODENAME) ubuntu=$value ;;
        PRETTY_NAME) HOST_PRETTY=$value ;;
        esac
    done <"$file"
    HOST_PRETTY=${HOST_PRETTY:-${id:-an unknown distribution} $version_id}
    in_list debian " $id $like " || in_list ubuntu " $id $like " || return 0
    HOST_APT=1
    codename=${ubuntu:-$codename}
    if [ -z "$codename" ]; then
        case $id/$version_id in
        debian/12) codename=bookworm ;; debian/13) codename=trixie ;;
        ubuntu/22.04) codename=jammy ;; ubuntu/24.04) codename=noble ;;
        esac
    fi
    row=$(release_row "$codename") || return 0
    read -r HOST_RABBITMQ HOST_POSTGRES HOST_NAME <<<"$row"
}

KNOWN_RELEASES="Debian 12 and 13, Ubuntu 22.04 and 24.04"

# source_of rabbitmq|postgres V: where version V comes from on this machine. Sets SRC_ROOT (""
# for this machine's own packages, else the Debian root's release) and SRC_NAME (whose package).
# Returns 1, with the reason in SRC_WHY, if nowhere.
source_of() {
    local kind=$1 v=$2 host
    if [ "$kind" = rabbitmq ]; then host=$HOST_RABBITMQ; else host=$HOST_POSTGRES; fi
    SRC_ROOT='' SRC_NAME='' SRC_WHY=''
    if [ -n "$host" ] && [ "$v" = "$host" ]; then
        SRC_NAME=$HOST_NAME
    elif SRC_ROOT=$(root_release "$kind" "$v") && [ "$HOST_APT" = 1 ]; then
        SRC_NAME=$(release_row "$SRC_ROOT" | cut -d' ' -f3-)
    else
        SRC_ROOT=
        SRC_WHY="this machine ($HOST_PRETTY) offers ${host:-no version the scripts know}"
        if [ "$HOST_APT" = 1 ]; then SRC_WHY+="; a Debian root offers RabbitMQ 3.10 or 4.0, PostgreSQL 15 or 17"; fi
        return 1
    fi
}

# package_of rabbitmq|postgres V: the distribution's package name.
package_of() { if [ "$1" = rabbitmq ]; then echo rabbitmq-server; else echo "postgresql-$2"; fi; }

# plan_line rabbitmq|postgres V: what provides version V here, in one line.
plan_line() {
    local kind=$1 v=$2 pkg known=$RABBIT_VERSIONS var=EDC_RABBITMQ
    if [ "$kind" = postgres ]; then known=$PG_VERSIONS var=EDC_POSTGRES; fi
    in_list "$v" " $known " || { echo "$kind $v: $var must be one of $known, not '$v'"; return 1; }
    pkg=$(package_of "$kind" "$v")
    source_of "$kind" "$v" || { echo "$kind $v: not available: $SRC_WHY"; return 1; }
    if [ -z "$SRC_ROOT" ]; then
        echo "$kind $v: apt-get install $pkg ($SRC_NAME's package, on this machine)"
    else
        root_select "$SRC_ROOT"
        echo "$kind $v: apt-get install $pkg ($SRC_NAME's package, in the $ROOT_LABEL root $ROOT_DIR, made once with debootstrap: about 670 MB)"
    fi
}

# cmd_plan [OS_RELEASE]: what start installs and runs for the chosen versions (EDC_RABBITMQ,
# EDC_POSTGRES, or the distribution's row) on the distribution that OS_RELEASE describes.
cmd_plan() {
    local ok=0
    host_read "${1:-/etc/os-release}"
    echo "distribution: $HOST_PRETTY"
    if [ -n "$HOST_NAME" ]; then
        echo "row: $HOST_RABBITMQ/$HOST_POSTGRES ($HOST_NAME's packages: rabbitmq-server, postgresql-$HOST_POSTGRES)"
    else
        echo "row: none (the scripts know $KNOWN_RELEASES)"
    fi
    [ -n "${EDC_RABBITMQ:-$HOST_RABBITMQ}" ] || { echo "rabbitmq: no version (set EDC_RABBITMQ)"; ok=1; }
    [ -n "${EDC_POSTGRES:-$HOST_POSTGRES}" ] || { echo "postgres: no version (set EDC_POSTGRES)"; ok=1; }
    [ "$ok" = 0 ] || return 1
    plan_line rabbitmq "${EDC_RABBITMQ:-$HOST_RABBITMQ}" || ok=1
    plan_line postgres "${EDC_POSTGRES:-$HOST_POSTGRES}" || ok=1
    return "$ok"
}

# cmd_row [OS_RELEASE]: the distribution's row, RABBITMQ/POSTGRES (what scripts/test.sh runs).
cmd_row() {
    host_read "${1:-/etc/os-release}"
    [ -n "$HOST_NAME" ] || die "this machine is $HOST_PRETTY: the scripts know the packages of $KNOWN_RELEASES"
    echo "$HOST_RABBITMQ/$HOST_POSTGRES"
}

# apt-get install that never starts the packages' own services: Debian's and Ubuntu's
# rabbitmq-server and postgresql-N would otherwise start a system instance on 5672 / 5432 where a
# policy-rc.d does not already forbid it.
APT_UPDATED=
apt_install() {
    need_root "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    local own_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local rc=0
    {
        if [ -z "$APT_UPDATED" ]; then apt-get update -qq && APT_UPDATED=1; fi
        apt-get install -y -qq "$@" >/dev/null
    } || rc=$?
    if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
    return "$rc"
}

# installed_version PACKAGE ROOT: the installed package version ("" if none), on this machine or
# (ROOT a release) in that Debian root.
installed_version() {
    if [ -n "$2" ]; then
        root_select "$2"
        awk -v p="$1" '$1 == p { print $2 }' "$ROOT_DIR/$ROOT_MARK" 2>/dev/null
    else
        dpkg-query -W -f '${db:Status-Status} ${Version}\n' "$1" 2>/dev/null | awk '$1 == "installed" { print $2 }'
    fi
}

# ensure_installed: the chosen versions are there, installed now if not (saying what first).
ensure_installed() {
    local pkgs=() what=() r
    if [ -n "$RABBIT_ROOT" ]; then need_root "RabbitMQ $RABBIT_VERSION (from a $(release_row "$RABBIT_ROOT" | cut -d' ' -f3-) root)"; fi
    if [ -n "$PG_ROOT" ]; then need_root "PostgreSQL $PG_VERSION (from a $(release_row "$PG_ROOT" | cut -d' ' -f3-) root)"; fi
    if [ -z "$RABBIT_ROOT" ] && ! rabbit_installed; then
        pkgs+=(rabbitmq-server) what+=("rabbitmq-server (RabbitMQ $RABBIT_VERSION)")
    fi
    # Installing when present would upgrade the minor version, hence the guard.
    if [ -z "$PG_ROOT" ] && ! pg_installed; then
        pkgs+=("postgresql-$PG_VERSION") what+=("postgresql-$PG_VERSION (PostgreSQL $PG_VERSION)")
    fi
    if [ "${#pkgs[@]}" -gt 0 ]; then
        [ "$AS_ROOT" = 1 ] || die "not installed: ${what[*]}; install them once with: sudo scripts/services.sh install"
        log "installing ${what[*]} from $HOST_NAME's repositories with apt-get (their own services are not started)"
        apt_install "${pkgs[@]}" || die "apt-get install ${pkgs[*]} failed"
    fi
    for r in $RABBIT_ROOT $PG_ROOT; do root_ensure "$r"; done
    if [ -z "$PG_ROOT" ] && [ "$AS_ROOT" = 1 ]; then
        id postgres >/dev/null 2>&1 || die "no postgres system user after installing postgresql-$PG_VERSION"
    fi
    if [ -z "$RABBIT_ROOT" ]; then
        r=$(installed_version rabbitmq-server "")
        [[ $r == "$RABBIT_VERSION".* ]] ||
            log "WARNING: rabbitmq-server ${r:-?} is installed, not $HOST_NAME's $RABBIT_VERSION; the tests expect $RABBIT_VERSION"
    fi
}
