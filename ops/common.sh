# Shared by ops/demo, ops/test and ops/bench: find Swift, install what is missing.
# Sourced, not run. Idempotent: apt-get runs only when a package is missing.

if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH=/opt/swift/usr/bin:$PATH
fi
command -v swift >/dev/null 2>&1 || { echo "ops: swift not found (expected /opt/swift/usr/bin/swift)" >&2; exit 1; }

# mpirun as root needs these; harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# ensure_packages PKG... : apt-get update + install only for packages not yet installed.
ensure_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "ops: installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The demo corpus: every English fortunes file from Debian's `fortunes` package, concatenated.
ensure_fortunes_corpus() {
    local out=data/fortunes.txt
    [ -s "$out" ] && return 0
    mkdir -p data
    local files=()
    for f in /usr/share/games/fortunes/*; do
        case "$f" in *.dat|*.u8) continue ;; esac
        [ -f "$f" ] && [ ! -L "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || { echo "ops: no fortunes files in /usr/share/games/fortunes" >&2; exit 1; }
    cat "${files[@]}" > "$out.tmp" && mv "$out.tmp" "$out"
    echo "ops: wrote $out ($(wc -c < "$out") bytes from ${#files[@]} fortunes files)"
}

# ensure_fortunes_bpe SWITCHYARD: a 4096-token byte-level BPE of the fortunes corpus
# (data/fortunes-bpe.json) and the corpus prepared with it (data/fortunes-bpe.bin), unless there.
ensure_fortunes_bpe() {
    local sy="$1"
    [ -s data/fortunes-bpe.json ] || "$sy" tokenizer train data/fortunes.txt --vocab 4096 --out data/fortunes-bpe.json
    [ -s data/fortunes-bpe.bin ] || "$sy" data prepare --tokenizer data/fortunes-bpe.json data/fortunes.txt \
        --out data/fortunes-bpe.bin
}

# swift_build ARGS... : builds quietly; on failure prints the errors and exits 1.
swift_build() {
    local log
    log="$(mktemp)"
    if ! swift build "$@" > "$log" 2>&1; then
        grep -E "error" "$log" | head -40 >&2 || tail -40 "$log" >&2
        rm -f "$log"
        echo "ops: swift build $* failed" >&2
        exit 1
    fi
    rm -f "$log"
}
