#!/bin/bash
# Builds a real LuCI stack (ubusd, rpcd, uhttpd, ucode, LuCI's base and bootstrap theme)
# into OUT/root from source checkouts in SRC. Fetches nothing; see README.md for the
# checkouts it expects. Never run in CI: the sources are not in the repo and must stay out.
#
#   tests/lab/realluci/build.sh SRC OUT
set -euo pipefail

SRC=$(realpath "${1:?usage: build.sh SRC OUT}")
OUT=$(realpath -m "${2:?usage: build.sh SRC OUT}")
ROOT=$OUT/root
BUILD=$OUT/build
JOBS=${JOBS:-2}

for dir in libubox ubus uci ucode rpcd uhttpd lucihttp cgi-io luci/modules/luci-base \
		luci/modules/luci-mod-network luci/themes/luci-theme-bootstrap luci/contrib/package/ucode-mod-html; do
	[ -d "$SRC/$dir" ] || { echo "build.sh: $SRC/$dir is missing (see README.md)" >&2; exit 2; }
done
mkdir -p "$ROOT" "$BUILD"

export CFLAGS="-I$ROOT/usr/include -O2 -Wno-error"
export LDFLAGS="-L$ROOT/usr/lib -Wl,-rpath-link,$ROOT/usr/lib"

cmake_install() {  # NAME [cmake options...]
	local name=$1; shift
	echo "== $name"
	cmake -S "$SRC/$name" -B "$BUILD/$name" -DCMAKE_INSTALL_PREFIX=/usr \
		-DCMAKE_PREFIX_PATH="$ROOT/usr" -DCMAKE_C_FLAGS="$CFLAGS ${EXTRA_CFLAGS:-}" \
		-DCMAKE_INSTALL_LIBDIR=lib -DCMAKE_POLICY_VERSION_MINIMUM=3.5 "$@" >"$BUILD/$name.cmake.log"
	make -C "$BUILD/$name" -j"$JOBS" >"$BUILD/$name.make.log" 2>&1 \
		|| { tail -30 "$BUILD/$name.make.log"; exit 1; }
	make -C "$BUILD/$name" install DESTDIR="$ROOT" >>"$BUILD/$name.make.log" 2>&1
}

cmake_install libubox -DBUILD_LUA=OFF -DBUILD_EXAMPLES=OFF -DUNIT_TESTING=OFF
cmake_install ubus -DBUILD_LUA=OFF -DBUILD_EXAMPLES=OFF -DUNIT_TESTING=OFF
cmake_install uci -DBUILD_LUA=OFF -DUNIT_TESTING=OFF
cmake_install ucode -DUBUS_SUPPORT=ON -DUCI_SUPPORT=ON -DULOOP_SUPPORT=ON \
	-DRTNL_SUPPORT=OFF -DNL80211_SUPPORT=OFF -DDIGEST_SUPPORT=OFF -DZLIB_SUPPORT=OFF \
	-DDEBUG_SUPPORT=OFF
# ucode's util.h needs vasprintf
EXTRA_CFLAGS=-D_GNU_SOURCE= cmake_install rpcd -DIWINFO_SUPPORT=OFF -DRPCSYS_SUPPORT=OFF -DUCODE_SUPPORT=ON
EXTRA_CFLAGS="-Wno-error=implicit-function-declaration -Wno-error=stringop-overread" \
	cmake_install uhttpd -DTLS_SUPPORT=OFF -DLUA_SUPPORT=OFF -DUBUS_SUPPORT=ON -DUCODE_SUPPORT=ON
EXTRA_CFLAGS=-Wno-error=implicit-function-declaration cmake_install lucihttp -DBUILD_LUA=OFF -DBUILD_UCODE=ON -DBUILD_TESTS=OFF

# The rpcd package installs the ACL that lets an anonymous session log in.
mkdir -p "$ROOT/usr/share/rpcd/acl.d"
cp "$SRC/rpcd/unauthenticated.json" "$ROOT/usr/share/rpcd/acl.d/"
EXTRA_CFLAGS=-D_GNU_SOURCE= cmake_install cgi-io
# The cgi-io package's layout: one binary, called by the name of the applet.
mkdir -p "$ROOT/usr/libexec" "$ROOT/www/cgi-bin"
mv "$ROOT/usr/sbin/cgi-io" "$ROOT/usr/libexec/cgi-io"
for applet in upload download backup exec; do
	ln -sf ../../usr/libexec/cgi-io "$ROOT/www/cgi-bin/cgi-$applet"
done

echo "== ucode-mod-html"
# shellcheck disable=SC2086  # CFLAGS and LDFLAGS are lists of flags: split on purpose
gcc $CFLAGS -fPIC -shared -o "$ROOT/usr/lib/ucode/html.so" \
	"$SRC/luci/contrib/package/ucode-mod-html/src/html.c" $LDFLAGS

echo "== luci-base core.so"
rm -rf "$BUILD/luci-base-src"
cp -r "$SRC/luci/modules/luci-base/src" "$BUILD/luci-base-src"
make -C "$BUILD/luci-base-src" FPIC=-fPIC LUCI_VERSION=realluci LUCI_GITBRANCH=local \
	CFLAGS="$CFLAGS" LDFLAGS="$LDFLAGS" install DESTDIR="$ROOT" >"$BUILD/luci-base.make.log" 2>&1 \
	|| { tail -30 "$BUILD/luci-base.make.log"; exit 1; }

echo "== luci-base, luci-mod-network and bootstrap files"
# The layout luci.mk gives a LuCI package: htdocs under /www, ucode under
# /usr/share/ucode/luci, root/ as is.
# luci-mod-network brings /usr/libexec/luci-peeraddr, which LuCI's apply runs through cgi-io.
for pkg in "$SRC/luci/modules/luci-base" "$SRC/luci/modules/luci-mod-network" \
		"$SRC/luci/themes/luci-theme-bootstrap"; do
	mkdir -p "$ROOT/www" "$ROOT/usr/share/ucode/luci"
	[ -d "$pkg/htdocs" ] && cp -r "$pkg/htdocs/." "$ROOT/www/"
	[ -d "$pkg/ucode" ] && cp -r "$pkg/ucode/." "$ROOT/usr/share/ucode/luci/"
	[ -d "$pkg/root" ] && cp -r "$pkg/root/." "$ROOT/"
done

echo "== host libraries the chroot needs"
mkdir -p "$ROOT/lib64" "$ROOT/bin" "$ROOT/tmp" "$ROOT/var/run" "$ROOT/dev" "$ROOT/proc"
cp /bin/dash "$ROOT/bin/sh"
{ find "$ROOT" -type f \( -perm -u+x -o -name '*.so*' \) -print0 | xargs -0 ldd 2>/dev/null || true; } \
	| awk '/=> \//{print $3} /^\t\/lib64/{print $1}' | sort -u | while read -r lib; do
		case $lib in "$ROOT"*) continue ;; esac
		mkdir -p "$ROOT$(dirname "$lib")"
		cp -L "$lib" "$ROOT$lib"
	done
echo "built into $ROOT"
