#!/usr/bin/env python3
"""Render sounds/catalogue.yaml to sounds/<lang>/<prompt_id>.wav (8 kHz, 16-bit, mono) with espeak-ng and sox.

    apt-get install -y espeak-ng sox
    python sounds/render.py            # render what changed
    python sounds/render.py --check    # exit 1 if any file is missing or out of date (renders nothing)
    python sounds/render.py --force    # render everything again

Idempotent: sounds/manifest.json records, per file, a hash of everything that shaped it (text, voice, speed,
sox effects); a file whose hash still matches is skipped, so editing one text re-renders one file. Files of
prompt ids removed from the catalogue are deleted. The audio is committed: neither tool is needed to run or
test cardd. Leading and trailing silence is trimmed (small files, no dead air between the words of a
file_string sentence) and a short pause is padded back at the end so concatenated words do not run together.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import yaml

log = logging.getLogger("render")

HERE = os.path.dirname(os.path.abspath(__file__))
CATALOGUE = os.path.join(HERE, "catalogue.yaml")
MANIFEST = os.path.join(HERE, "manifest.json")

#: espeak-ng voice per catalogue language (es-419: Latin American Spanish, the usual calling-card audience).
VOICES: dict[str, str] = {"en": "en-us", "es": "es-419", "fr": "fr-fr"}
#: Respellings for espeak-ng where its reading of the catalogue text is wrong (it spells "PIN" letter by letter
#: and reads the loanwords of some currencies the English way). The catalogue keeps the proper spelling for
#: transcripts; only the audio uses these.
SAY_AS: dict[str, dict[str, str]] = {
    "en": {"PIN": "pin", "paise": "pie-say", "centime": "sahnteem", "centimes": "sahnteems"},
    "es": {"PIN": "pin"},
    "fr": {"PIN": "pine", "pence": "pènse", "paisa": "païssa", "paisas": "païssas"},
}
#: words per minute; a little slower than espeak's 175 for the telephone
SPEED = 150
#: bump when the pipeline changes in a way the arguments below do not show
RENDER_VERSION = 1

# trim silence below 0.5 % at both ends (silence works at the start, so reverse around it for the end),
# normalise to -3 dBFS so every prompt plays at the same level
TRIM = ["silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse", "norm", "-3"]
PAD_SENTENCE = "0.25"  # after a text ending a sentence
PAD_WORD = "0.06"      # after a word or phrase that others follow in a file_string


@dataclass(frozen=True)
class Job:
    lang: str
    prompt_id: str
    text: str

    @property
    def rel(self) -> str:
        return f"{self.lang}/{self.prompt_id}.wav"

    def pad(self) -> str:
        return PAD_SENTENCE if self.text.rstrip().endswith((".", "?", "!")) else PAD_WORD

    def spoken(self) -> str:
        """The text as espeak-ng should read it (SAY_AS respellings applied to whole words)."""
        text = self.text
        for word, say in SAY_AS.get(self.lang, {}).items():
            text = re.sub(rf"\b{re.escape(word)}\b", say, text)
        return text

    def espeak_args(self, wav: str) -> list[str]:
        return ["espeak-ng", "-v", VOICES[self.lang], "-s", str(SPEED), "-w", wav, "--", self.spoken()]

    def sox_args(self, src: str, dst: str) -> list[str]:
        return ["sox", src, "-r", "8000", "-b", "16", "-c", "1", "-e", "signed-integer", dst,
                *TRIM, "pad", "0", self.pad()]

    def digest(self) -> str:
        # everything that shapes the audio, so any change re-renders exactly the files it affects
        spec = {"v": RENDER_VERSION, "text": self.text, "espeak": self.espeak_args("-"),
                "sox": self.sox_args("-", "-")}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def load_jobs(catalogue_path: str, langs: set[str] | None = None) -> list[Job]:
    with open(catalogue_path, encoding="utf-8") as f:
        catalogue = yaml.safe_load(f)
    jobs = []
    for prompt_id, texts in catalogue.items():
        for lang, text in texts.items():
            if lang not in VOICES:
                raise SystemExit(f"{catalogue_path}: {prompt_id}.{lang}: no espeak-ng voice for {lang!r} "
                                 f"(add it to VOICES in {__file__})")
            if langs is None or lang in langs:
                jobs.append(Job(lang, prompt_id, text))
    return jobs


def load_manifest(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    return dict(data.get("files", {}))


def save_manifest(path: str, files: dict[str, str]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"version": RENDER_VERSION, "files": dict(sorted(files.items()))}, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def render_one(job: Job, out_dir: str) -> None:
    dst = os.path.join(out_dir, job.rel)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cardd-render-") as tmp:
        raw = os.path.join(tmp, "raw.wav")
        out = os.path.join(tmp, "out.wav")
        subprocess.run(job.espeak_args(raw), check=True, capture_output=True)
        subprocess.run(job.sox_args(raw, out), check=True, capture_output=True)
        # replace atomically: an interrupted run never leaves a half-written prompt behind
        shutil.move(out, dst + ".tmp")
        os.replace(dst + ".tmp", dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report missing or stale files; exit 1 if any")
    parser.add_argument("--force", action="store_true", help="render every file again")
    parser.add_argument("--lang", action="append", help="only this language (repeatable)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=HERE, help="sounds directory (default: next to this script)")
    args = parser.parse_args(argv)

    manifest_path = os.path.join(args.out, "manifest.json")
    jobs = load_jobs(CATALOGUE, set(args.lang) if args.lang else None)
    manifest = load_manifest(manifest_path)
    todo = [j for j in jobs
            if args.force or manifest.get(j.rel) != j.digest() or not os.path.exists(os.path.join(args.out, j.rel))]
    wanted = {j.rel for j in load_jobs(CATALOGUE)}
    stale = sorted(rel for rel in manifest if rel not in wanted)

    if args.check:
        for j in todo:
            log.info("out of date: %s", j.rel)
        for rel in stale:
            log.info("no longer in the catalogue: %s", rel)
        return 1 if todo or stale else 0

    missing_tools = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if todo and missing_tools:
        log.error("missing %s: apt-get install -y espeak-ng sox", " and ".join(missing_tools))
        return 2

    for rel in stale:
        path = os.path.join(args.out, rel)
        if os.path.exists(path):
            os.remove(path)
        del manifest[rel]
        log.info("removed %s", rel)

    failed = 0
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {pool.submit(render_one, j, args.out): j for j in todo}
            for future, job in futures.items():
                try:
                    future.result()
                except subprocess.CalledProcessError as exc:
                    failed += 1
                    log.error("%s: %s failed: %s", job.rel, exc.cmd[0], exc.stderr.decode(errors="replace").strip())
                    continue
                manifest[job.rel] = job.digest()
    finally:
        # record what was rendered even when interrupted, so the next run resumes
        save_manifest(manifest_path, manifest)

    total = sum(os.path.getsize(os.path.join(args.out, j.rel)) for j in jobs
                if os.path.exists(os.path.join(args.out, j.rel)))
    log.info("%d rendered, %d up to date, %d failed; %d files, %.1f MB", len(todo) - failed,
             len(jobs) - len(todo), failed, len(jobs), total / 1e6)
    return 1 if failed else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
