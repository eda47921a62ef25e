#!/usr/bin/env bash
# Installs Passage: release binaries, udev rules, systemd units, docs and the example policy.
#
#   scripts/install.sh [--prefix /usr/local] [--destdir DIR] [--no-build]   install
#   scripts/install.sh --uninstall [--prefix /usr/local] [--destdir DIR]     remove what install put there
#
# Puts passage, passaged and passage-vmm in PREFIX/bin, 70-passage.rules in /usr/lib/udev/rules.d,
# passaged.service/.socket in /usr/lib/systemd/system (ExecStart pointing at PREFIX/bin), docs in
# PREFIX/share/doc/passage, and creates the `passage` group. It never overwrites an existing
# /etc/passage/passage.toml and never starts or enables anything: run
# `systemctl daemon-reload && systemctl enable --now passaged.socket` yourself.
# With --destdir (packaging, tests) nothing outside DIR is touched and no group is created.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

prefix=/usr/local destdir= build=1 uninstall=
while (($#)); do
    case $1 in
    --prefix) prefix=$2; shift 2 ;;
    --destdir) destdir=$2; shift 2 ;;
    --no-build) build=; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
    esac
done
[[ $prefix == /* ]] || { echo "install.sh: --prefix must be absolute, not $prefix" >&2; exit 64; }

bin=$destdir$prefix/bin
doc=$destdir$prefix/share/doc/passage
rules=$destdir/usr/lib/udev/rules.d
units=$destdir/usr/lib/systemd/system
etc=$destdir/etc/passage
files=("$bin/passage" "$bin/passaged" "$bin/passage-vmm" "$rules/70-passage.rules"
       "$units/passaged.service" "$units/passaged.socket")

if [[ -n $uninstall ]]; then
    for f in "${files[@]}"; do [[ -e $f ]] && rm -v "$f"; done
    [[ -d $doc ]] && rm -rv "$doc"
    echo "left alone: $etc (your policy), /var/lib/passage (claims and intents), the passage group"
    exit 0
fi

if [[ -n $build ]]; then
    . scripts/env.sh
    echo "== building release binaries"
    swift build -c release --product passage
    swift build -c release --product passaged
    swift build -c release --product passage-vmm
fi
# PASSAGE_INSTALL_BIN: take the binaries from there instead (tests install debug builds).
out=${PASSAGE_INSTALL_BIN:-$(. scripts/env.sh >/dev/null 2>&1; swift build -c release --show-bin-path)}
for b in passage passaged passage-vmm; do
    [[ -x $out/$b ]] || { echo "install.sh: $out/$b is missing; run without --no-build" >&2; exit 1; }
done

install -d -m 0755 "$bin" "$doc" "$rules" "$units" "$etc"
install -m 0755 "$out/passage" "$out/passaged" "$out/passage-vmm" "$bin/"
install -m 0644 udev/70-passage.rules "$rules/"
sed "s|/usr/local/bin/|$prefix/bin/|g" systemd/passaged.service >"$units/passaged.service"
chmod 0644 "$units/passaged.service"
install -m 0644 systemd/passaged.socket "$units/"
install -m 0644 docs/*.md docs/passage.toml.example "$doc/"
[[ -e $etc/passage.toml ]] || install -m 0644 docs/passage.toml.example "$etc/passage.toml.example"

if [[ -z $destdir ]]; then
    getent group passage >/dev/null || groupadd --system passage
    command -v udevadm >/dev/null && udevadm control --reload 2>/dev/null || true
fi
echo "installed under ${destdir:-/}: $prefix/bin/{passage,passaged,passage-vmm}, udev rules, systemd units, docs"
echo "next: cp $prefix/share/doc/passage/passage.toml.example /etc/passage/passage.toml (edit it), then"
echo "      systemctl daemon-reload && systemctl enable --now passaged.socket"
