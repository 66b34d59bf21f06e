#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (the reference server the benchmarks compare against) from the llama.cpp
# vendored in the llama-cpp-python source distribution pinned in pyproject.toml, so both run the same llama.cpp.
# The binary is cached, keyed by the llama-cpp-python version:
#   ${SLM_CACHE_HOME:-$HOME/.cache/slm-operator}/bin/llama-server-<version>/llama-server
# A warm run only checks that file. A cold build takes 8-13 minutes on 2 cores; it happens in a scratch
# directory inside the cache and is moved into place by one rename, so an interrupted build leaves nothing behind.
# The binary is linked statically against ggml/llama (no shared libraries to find at run time).
# Usage: hack/build-llama-server.sh [python]   (python: the interpreter whose pip downloads the sdist; default .venv)
# Prints the path of the binary on stdout; progress goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${1:-$root/.venv/bin/python}"
version=$(sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' "$root/pyproject.toml")
[[ -n "$version" ]] || { echo "no llama-cpp-python==VERSION pin in pyproject.toml" >&2; exit 1; }
cache="${SLM_CACHE_HOME:-$HOME/.cache/slm-operator}/bin"
dest="$cache/llama-server-$version"
jobs="${LLAMA_SERVER_JOBS:-$(nproc 2>/dev/null || echo 2)}"

log() { printf '[llama-server %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ -x "$dest/llama-server" ]]; then
    echo "$dest/llama-server"
    exit 0
fi

mkdir -p "$cache"
# One build at a time per cache: a second caller waits, then finds the binary present.
if command -v flock >/dev/null; then
    exec 9>"$cache/.llama-server.lock"
    flock 9
    if [[ -x "$dest/llama-server" ]]; then
        echo "$dest/llama-server"
        exit 0
    fi
fi

for tool in cmake c++; do
    command -v "$tool" >/dev/null || { log "$tool is not installed (needed to build llama-server)"; exit 1; }
done

rm -rf "$cache"/.llama-server-build.* # scratch left by a build that was killed (we hold the lock)
tmp="$(mktemp -d "$cache/.llama-server-build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS

log "downloading the llama-cpp-python $version source distribution"
"$python" -m pip download --quiet --no-binary :all: --no-deps --dest "$tmp/sdist" "llama-cpp-python==$version"
archive="$(find "$tmp/sdist" -maxdepth 1 -name 'llama_cpp_python-*.tar.gz' | head -n 1)"
[[ -n "$archive" ]] || { log "pip did not produce a llama_cpp_python-$version sdist"; exit 1; }
tar -xzf "$archive" -C "$tmp"
src="$(find "$tmp" -maxdepth 4 -type d -path '*/vendor/llama.cpp' | head -n 1)"
[[ -f "$src/CMakeLists.txt" ]] || { log "the sdist carries no vendor/llama.cpp"; exit 1; }

log "building llama-server from $(basename "$archive") with $jobs jobs (8-13 minutes on 2 cores)"
cmake -S "$src" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF >"$tmp/cmake.log" 2>&1 ||
    { tail -n 40 "$tmp/cmake.log" >&2; exit 1; }
cmake --build "$tmp/build" --target llama-server -j "$jobs" >"$tmp/build.log" 2>&1 ||
    { tail -n 40 "$tmp/build.log" >&2; exit 1; }
binary="$tmp/build/bin/llama-server"
[[ -x "$binary" ]] || { log "the build produced no bin/llama-server"; exit 1; }
"$binary" --version >/dev/null 2>&1 || { log "the built llama-server does not run"; exit 1; }

# The scratch directory lives in the cache (same filesystem): the final step is one directory rename.
mkdir -p "$tmp/out"
mv "$binary" "$tmp/out/llama-server"
rm -rf "$dest" # a leftover without an executable binary (checked above)
mv -T "$tmp/out" "$dest"
log "llama-server $version built in $((SECONDS - start))s: $dest/llama-server"
echo "$dest/llama-server"
