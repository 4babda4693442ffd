#!/bin/sh
# install_test.sh SOURCE_DIR - `make install` from a clean build: headers,
# both libraries, closewise.pc, the binary and man pages land under the
# prefix, and a program using only <closewise/closewise.h> and pkg-config
# builds and runs against the shared and the static library, through
# pkg-config and through find_package(closewise). The prefix is chosen only
# at install time (the build was configured for another one), as packagers
# and `cmake --install --prefix` do; `make uninstall` removes it all again.
set -eu
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
cmake -S "$src" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release -DCW_TESTS=OFF \
      -DCMAKE_INSTALL_PREFIX=/nonexistent/configured-prefix >/dev/null
cmake --build "$tmp/build" -j 2 >/dev/null
cmake --install "$tmp/build" --prefix "$prefix" >/dev/null

fail() { echo "install_test: $*" >&2; exit 1; }
libdir=$(dirname "$(find "$prefix" -name closewise.pc | head -n 1)")/..
[ -f "$prefix/include/closewise/closewise.h" ] || fail "header not installed"
[ -x "$prefix/bin/closewise" ] || fail "binary not installed"
[ -f "$prefix/share/man/man1/closewise.1" ] || fail "closewise(1) not installed"
[ -f "$prefix/share/man/man3/libclosewise.3" ] || fail "libclosewise(3) not installed"
ls "$libdir"/libclosewise.so.0 >/dev/null || fail "shared library not installed"
ls "$libdir"/libclosewise.a >/dev/null || fail "static library not installed"
"$prefix/bin/closewise" --version | grep -q '^closewise ' || fail "--version"
# Completion, installed where bash-completion and zsh look, answering
# `closewise l<TAB>` with ls through the installed binary.
comp="$prefix/share/bash-completion/completions/closewise"
[ -f "$comp" ] || fail "bash completion not installed"
[ -f "$prefix/share/zsh/site-functions/_closewise" ] || fail "zsh completion not installed"
got=$(bash -c '. "$1"; COMP_WORDS=("$2" l); COMP_CWORD=1; _closewise; echo "${COMPREPLY[*]}"' \
      sh "$comp" "$prefix/bin/closewise")
[ "$got" = ls ] || fail "bash completion of 'closewise l': '$got'"

# The preload of `closewise trace` and `probe --where`, private to closewise,
# exports only the libc names it interposes; the installed binary finds it
# relative to itself (the build was configured for another prefix).
[ -f "$libdir/closewise/libclosewise-trace.so" ] || fail "libclosewise-trace.so not installed"
if nm -D --defined-only "$libdir/closewise/libclosewise-trace.so" | awk '{print $3}' |
   grep -Ev '^(read|__read_chk|recv|__recv_chk|recvfrom|__recvfrom_chk|recvmsg|readv|close|shutdown|socket|accept|accept4|dup|dup2|dup3|fcntl|fcntl64)$' | grep -q .; then
    fail "libclosewise-trace.so exports more than its interposers"
fi
"$prefix/bin/closewise" trace --check -- true 2>"$tmp/trace.err" || { cat "$tmp/trace.err"; fail "closewise trace -- true"; }
[ ! -s "$tmp/trace.err" ] || { cat "$tmp/trace.err"; fail "closewise trace -- true is not quiet"; }

# Only the public cw_ API is exported; cw__ internals stay hidden.
if nm -D --defined-only "$libdir"/libclosewise.so.0 | awk '{print $3}' | grep -v '^cw_[a-z]' | grep -q .; then
    fail "shared library exports more than the cw_ API"
fi
nm -D --defined-only "$libdir"/libclosewise.so.0 | grep -q ' cw_dial$' || fail "cw_dial not exported"

export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc -Wall -Wextra -Werror -o "$tmp/tidy_shared" "$src/examples/tidy_client.c" \
   $(pkg-config --cflags --libs closewise) -Wl,-rpath,"$libdir"
cc -Wall -Wextra -Werror -static-libgcc -o "$tmp/tidy_static" "$src/examples/tidy_client.c" \
   $(pkg-config --cflags closewise) "$libdir/libclosewise.a" $(pkg-config --static --libs-only-l closewise | sed 's/-lclosewise//')
# A program that only dials pulls in neither libmnl nor libcrypt: the
# library is split by concern, and the archive gives it only the net part.
# (cw_dial resolves names with getaddrinfo: glibc's linker warning about
# static programs and NSS is expected; static_cc.sh says so in one line.)
sh "$src/tests/static_cc.sh" cc -Wall -Wextra -Werror -static -o "$tmp/tidy_fully_static" \
   "$src/examples/tidy_client.c" $(pkg-config --cflags closewise) "$libdir/libclosewise.a" \
   -lpthread || fail "a dial-only program needs more than libclosewise.a and pthreads"
if readelf -d "$tmp/tidy_fully_static" | grep -q NEEDED; then
    fail "tidy_fully_static is not static"
fi
if nm "$tmp/tidy_fully_static" | grep -Eq ' [TU] (mnl_|crypt)'; then
    fail "a dial-only program pulled in libmnl or libcrypt"
fi
for prog in tidy_shared tidy_static tidy_fully_static; do
    set +e
    "$tmp/$prog" >/dev/null 2>&1
    rc=$?
    set -e
    [ $rc -eq 2 ] || fail "$prog: expected usage exit 2, got $rc"
done
# A c++ compiler must accept the header too (extern "C").
if command -v c++ >/dev/null; then
    printf '#include <closewise/closewise.h>\nint main(){return cw_now_ms() < 0;}\n' > "$tmp/t.cc"
    c++ -Wall -Werror -o "$tmp/t" "$tmp/t.cc" $(pkg-config --cflags --libs closewise) \
        -Wl,-rpath,"$libdir" && "$tmp/t" || fail "C++ program"
fi
# The pkg-config file names the prefix it was installed to, not the one
# configured, and nothing else.
grep -q "^prefix=$prefix\$" "$libdir/pkgconfig/closewise.pc" || fail "closewise.pc prefix is not the install prefix"
grep -q configured-prefix "$libdir/pkgconfig/closewise.pc" && fail "closewise.pc names the configure-time prefix"

# find_package(closewise) from a tiny CMake project, shared and static.
mkdir -p "$tmp/fp"
cp "$src/examples/tidy_client.c" "$tmp/fp/"
cat > "$tmp/fp/CMakeLists.txt" <<'CMK'
cmake_minimum_required(VERSION 3.18)
project(fp LANGUAGES C)
find_package(closewise 0.1 REQUIRED)
add_executable(tidy_fp_shared tidy_client.c)
target_link_libraries(tidy_fp_shared PRIVATE closewise::closewise)
add_executable(tidy_fp_static tidy_client.c)
target_link_libraries(tidy_fp_static PRIVATE closewise::closewise_static)
CMK
cmake -S "$tmp/fp" -B "$tmp/fp/build" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_BUILD_RPATH="$libdir" >"$tmp/fp.log" 2>&1 || { cat "$tmp/fp.log"; fail "find_package(closewise)"; }
cmake --build "$tmp/fp/build" >>"$tmp/fp.log" 2>&1 || { cat "$tmp/fp.log"; fail "building against find_package(closewise)"; }
for prog in tidy_fp_shared tidy_fp_static; do
    set +e
    "$tmp/fp/build/$prog" >/dev/null 2>&1
    rc=$?
    set -e
    [ $rc -eq 2 ] || fail "$prog: expected usage exit 2, got $rc"
done
ldd "$tmp/fp/build/tidy_fp_static" | grep -q libclosewise && fail "tidy_fp_static links the shared library"

# Uninstall removes every installed file.
sh "$src/scripts/uninstall.sh" "$tmp/build/install_manifest.txt" >/dev/null
left=$(find "$prefix" -type f | wc -l)
[ "$left" -eq 0 ] || fail "uninstall left $left files: $(find "$prefix" -type f | head -n 3)"
echo "install_test: ok"
