#!/usr/bin/env bash
# Corpus and tokenizer for the text-generation example (run from this folder; Debian packages, no download):
#   apt-get install bible-kjv sentencepiece
# Writes corpus/train.txt and corpus/val.txt (the King James Bible, public domain, one verse per line; every 20th
# verse is held out) and ../Models/tokenizer.model (a byte-fallback BPE with identity normalization, which
# Microsoft.ML.Tokenizers' LlamaTokenizer loads and encodes exactly as spm_encode does).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus ../Models
# -l 100000: one verse per line (no wrapping); drop book/chapter headings and verse numbers.
bible -l 100000 "Gen1:1-Rev22:21" | sed -n 's/^ *[0-9][0-9]* //p' > corpus/all.txt
awk 'NR % 20 == 0' corpus/all.txt > corpus/val.txt
awk 'NR % 20 != 0' corpus/all.txt > corpus/train.txt
wc -l corpus/train.txt corpus/val.txt
spm_train --input=corpus/train.txt --model_prefix=corpus/kjv --vocab_size=2048 --model_type=bpe \
  --byte_fallback=true --normalization_rule_name=identity --character_coverage=1.0 \
  --pad_id=-1 --bos_id=1 --eos_id=2 --unk_id=0 --minloglevel=1
cp corpus/kjv.model ../Models/tokenizer.model
# Reference encodings for the test that LlamaTokenizer encodes as spm_encode does: held-out verses plus a line of
# non-ASCII text, tabs and double spaces (byte fallback, identity normalization).
{ awk 'NR % 31 == 0' corpus/val.txt | head -40; printf 'Ünïcödé — “quotes” & emoji 🙂 tabs\tand  double  spaces\n'; } > corpus/sample.txt
spm_encode --model=corpus/kjv.model --output_format=id < corpus/sample.txt > corpus/sample.ids
/usr/bin/python3 -c '
import json
texts = open("corpus/sample.txt", encoding="utf-8").read().split("\n")[:-1]
ids = [[int(t) for t in l.split()] for l in open("corpus/sample.ids").read().split("\n")[:-1]]
json.dump([{"text": t, "ids": i} for t, i in zip(texts, ids)], open("spm-encoded.json", "w", encoding="utf-8"), ensure_ascii=False, indent=0)'
