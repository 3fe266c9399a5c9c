"""Opt-in check of Switchyard's tokenizer against Hugging Face's `tokenizers` (ops/check-tokenizer).

usage: check_tokenizer.py SWITCHYARD CORPUS WORKDIR

Builds a test text with multi-byte UTF-8, whitespace runs, digits, contractions and special
tokens; trains one tokenizer with Switchyard and one with `tokenizers`; derives Llama 3 and
Qwen 2 style variants of the latter (Split pre-tokenizer, ignore_merges, NFC); and checks that
Switchyard's ids equal the library's for every tokenizer, that transformers loads Switchyard's
file with the same ids, and prints both encoders' MB/s on one thread.
"""

import json
import os
import random
import subprocess
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")


def test_text(corpus: str) -> str:
    rng = random.Random(7)
    pieces = [
        "naïve café, Ünïcödé — 日本語のテキスト, ١٢٣٤٥ and ㊿; emoji 🙂👍🏽 done\u00a0nbsp\u2003em-space",
        "I'LL say it's, we'Re, they've, she'd, I'm\tTabs\t\there   and  runs     of spaces   \n\n\n",
        "digits 1234567890 3.14159 1,000,000 0x1F 2026-12-07\r\nCRLF line\r\n",
        "<|endoftext|>a new document<|endoftext|><|endoftext|>",
        "e\u0301 (e + combining acute) vs \u00e9; Å vs A\u030a; ſ long s 'ſ",
    ]
    alphabet = list("abc XYZ 019 '\n\r\t\u00a0éü日本🙂!.,-") + ["<|endoftext|>", "'s", "'LL", "  "]
    randoms = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(300)]
    return corpus[:400_000] + "\n".join(pieces * 20 + randoms)


def switchyard_ids(sy: str, tok_path: str, text_path: str) -> tuple[list[int], str]:
    out = subprocess.run(
        [sy, "tokenizer", "encode", tok_path, text_path, "--json"], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)["ids"], out.stderr.strip()


def hf_variants(base: Tokenizer, work: str) -> dict[str, str]:
    """The library-trained tokenizer as GPT-2, Llama 3 and Qwen 2 style files."""
    files = {}
    spec = json.loads(base.to_str())
    files["hf-gpt2"] = spec
    for name, regex, nfc in [("hf-llama3", LLAMA3, False), ("hf-qwen2", QWEN2, True)]:
        s = json.loads(base.to_str())
        s["pre_tokenizer"] = json.loads(
            pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                ]
            ).__getstate__()
        )
        s["model"]["ignore_merges"] = name == "hf-llama3"
        if nfc:
            s["normalizer"] = json.loads(normalizers.NFC().__getstate__())
        files[name] = s
    paths = {}
    for name, s in files.items():
        paths[name] = os.path.join(work, name + ".json")
        with open(paths[name], "w") as f:
            json.dump(s, f)
    return paths


def main() -> int:
    sy, corpus_path, work = sys.argv[1:4]
    with open(corpus_path, encoding="utf-8", errors="replace") as f:
        corpus = f.read()
    text = test_text(corpus)
    text_path = os.path.join(work, "text.txt")
    with open(text_path, "w", encoding="utf-8") as f:
        f.write(text)
    ours = os.path.join(work, "switchyard.json")
    subprocess.run([sy, "tokenizer", "train", corpus_path, "--vocab", "4096", "--out", ours], check=True)

    base = Tokenizer(models.BPE())
    base.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    base.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    base.train([corpus_path], trainer)
    paths = {"switchyard": ours, **hf_variants(base, work)}

    failures = 0
    mb = len(text.encode()) / 1e6
    for name, path in paths.items():
        tok = Tokenizer.from_file(path)
        t0 = time.perf_counter()
        want = tok.encode(text, add_special_tokens=False).ids
        hf_s = time.perf_counter() - t0
        got, timing = switchyard_ids(sy, path, text_path)
        same = got == want
        if not same:
            failures += 1
            at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            print(f"  first difference at {at}: switchyard {got[at:at + 8]} tokenizers {want[at:at + 8]}")
        print(
            f"{name}: {len(want)} tokens, ids {'equal' if same else 'DIFFER'}; tokenizers {mb / hf_s:.2f} MB/s, "
            f"switchyard: {timing.split('(')[-1].rstrip(')')}"
        )
        lines = text.split("\n")
        t0 = time.perf_counter()
        tok.encode_batch(lines, add_special_tokens=False)
        batch_s = time.perf_counter() - t0
        print(f"  tokenizers on the text's lines as one batch (1 thread): {mb / batch_s:.2f} MB/s")
        normalized = tok.normalizer.normalize_str(text) if tok.normalizer else text
        roundtrip = tok.decode(got, skip_special_tokens=False) == normalized
        print(f"  tokenizers.decode(switchyard ids) == the normalized text: {roundtrip}")
        failures += 0 if roundtrip else 1

    fast = PreTrainedTokenizerFast(tokenizer_file=ours)
    same = fast(text, add_special_tokens=False)["input_ids"] == switchyard_ids(sy, ours, text_path)[0]
    print(f"transformers PreTrainedTokenizerFast loads switchyard.json, ids equal: {same}")
    failures += 0 if same else 1
    print("check-tokenizer: " + ("PASS" if failures == 0 else f"FAIL ({failures})"))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
