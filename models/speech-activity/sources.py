"""Recorded speech and music for the speech-activity recipe, taken from Debian 12 packages.

The packages are fetched with `apt-get download` at pinned versions, checked against pinned
SHA-256 sums and unpacked with `dpkg-deb -x` into a cache directory (nothing is installed). Their
Ogg Vorbis files are decoded by sox to 16 kHz mono float32.

    /usr/bin/python3 models/speech-activity/sources.py --fetch     # ~645 MB of packages, once

Speech (single words, letters, syllables and short game lines, each recorded by one person):
  ktuberling-data  usr/share/ktuberling/sounds/<lang>/*.ogg            GPL-2+
  klettres-data    usr/share/klettres/<lang>/{alpha,syllab}/*.ogg     GPL-2+
  hedgewars-data   usr/share/games/hedgewars/Data/Sounds/voices/<voice>/*.ogg   GFDL-1.3
  warzone2100-data base.wz: audio/tutorial, audio/memressp/* (English)  GPL-2+
Music (instrumental game soundtracks):
  hedgewars-data   usr/share/games/hedgewars/Data/Music/*.ogg         GPL-2
  extremetuxracer-data usr/share/games/etr/music/*.ogg                GPL-2+
  xmoto-data       usr/share/games/xmoto/Textures/Musics/*.ogg         GPL-2+
  lincity-ng-data  usr/share/games/lincity-ng/music/default/*.ogg      GPL-2+
  wesnoth-1.16-music usr/share/games/wesnoth/1.16/data/core/music/*.ogg  GPL-2

Split (deterministic, by sorted name): a language of ktuberling or klettres is held out when its
index in the sorted union of both packages' languages is 1 mod 4, so one speaker is never on both
sides; a hedgewars voice is held out when its index is 1 mod 4; warzone2100 is training only.
Music: the hedgewars, extremetuxracer, xmoto and lincity-ng tracks train; the wesnoth tracks
are held out (other composers and styles).
Not used at all: the asterisk sound and music-on-hold packages, alsa-utils' voice files and the
festival voices, which are kept for evaluation that is independent of this recipe.
"""

import argparse
import concurrent.futures
import hashlib
import os
import subprocess
import sys
import zipfile

import numpy as np

SR = 16000

# name -> (version, sha256 of the .deb)
PACKAGES = {
    "ktuberling-data": ("4:22.12.3-1",
                        "fba44c875bfa31ea488dadd9263e87a4dcaea0bd47d28817f6c0dc6d2af970ed"),
    "klettres-data": ("4:22.12.3-1",
                      "1186d257a19e84230856baea0b0b1ded8be9195080fcdb2588970b5cd937f5a8"),
    "hedgewars-data": ("1.0.2-6",
                       "722225903a72604403e6e0026e40e9a6953f47a74d94efc5f55504bc05bb4761"),
    "warzone2100-data": ("4.3.3-3",
                         "53ad292569e0bf9d16de1642d13629f29ed5dfb68896787e4c65ac60edc07d3d"),
    "wesnoth-1.16-music": ("1:1.16.9-1",
                           "f9bc3cde92b4ab30db5d7b85f89b4bcc3d788dd92602956d0347250850bf59bb"),
    "extremetuxracer-data": ("0.8.2-1",
                             "8ce6c82e6fb89549d284f43f6c4b0a9d82e6c0e5da753bee0ef419276a21470c"),
    "xmoto-data": ("0.6.1+repack-9",
                   "458966c8291579df7dd215a3ebf48cb89fc94e94fe871d124b542eb6233c0e66"),
    "lincity-ng-data": ("2.9~git20150314-5",
                        "8f5e85bd42879abdc7099b035d7a3d7468eceb6b93b52a12270c28f3f3c792f9"),
}

HEDGEWARS = "usr/share/games/hedgewars/Data"
WESNOTH_MUSIC = "usr/share/games/wesnoth/1.16/data/core/music"
# the training music: four games' soundtracks
TRAIN_MUSIC_DIRS = (HEDGEWARS + "/Music", "usr/share/games/etr/music",
                    "usr/share/games/xmoto/Textures/Musics",
                    "usr/share/games/lincity-ng/music/default")
WARZONE_DIRS = ("audio/tutorial/", "audio/memressp/")
# hedgewars voices left out: "Robot" is processed (vocoded) speech
EXCLUDED_VOICES = {"Robot"}
# wesnoth tracks left out: "silence" is silence
EXCLUDED_TRACKS = {"silence.ogg"}
MUSIC_SECONDS = 60.0      # from each track: 60 s starting 10 s in (past most intros)


def default_cache():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ssmserve", "speech-activity")


def _deb_path(cache, name):
    version = PACKAGES[name][0]
    return os.path.join(cache, "debs", f"{name}_{version.replace(':', '%3a')}_all.deb")


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def root(cache):
    return os.path.join(cache, "root")


def available(cache=None):
    """True when every package is unpacked in the cache."""
    cache = cache or default_cache()
    return all(os.path.exists(os.path.join(root(cache), ".done-" + n)) for n in PACKAGES)


def fetch(cache=None, log=print):
    """Downloads (apt-get download name=version), checks and unpacks every package once."""
    cache = cache or default_cache()
    os.makedirs(os.path.join(cache, "debs"), exist_ok=True)
    os.makedirs(root(cache), exist_ok=True)
    for name, (version, sha) in PACKAGES.items():
        done = os.path.join(root(cache), ".done-" + name)
        if os.path.exists(done):
            continue
        deb = _deb_path(cache, name)
        if not os.path.exists(deb):
            log(f"downloading {name}={version}")
            r = subprocess.run(["apt-get", "download", f"{name}={version}"],
                               cwd=os.path.dirname(deb), capture_output=True, text=True)
            if r.returncode != 0 or not os.path.exists(deb):
                raise SystemExit(f"apt-get download {name}={version} failed (is Debian 12's "
                                 f"package mirror reachable?):\n{r.stderr.strip()}")
        got = _sha256(deb)
        if got != sha:
            raise SystemExit(f"{deb}: sha256 {got}, expected {sha}; delete it and fetch again")
        subprocess.run(["dpkg-deb", "-x", deb, root(cache)], check=True)
        with open(done, "w") as f:
            f.write(version + "\n")
    return cache


def decode(src, start=None, seconds=None):
    """float32 mono samples at 16 kHz of an audio file, or of the bytes of an Ogg file (sox:
    channels averaged, resampled)."""
    data = src if isinstance(src, bytes) else None
    cmd = ["sox"] + (["-t", "ogg", "-"] if data is not None else [src])
    cmd += ["-t", "raw", "-e", "floating-point", "-b", "32", "-r", str(SR), "-c", "1", "-"]
    if start is not None:
        cmd += ["trim", str(start), str(seconds)]
    raw = subprocess.run(cmd, input=data, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def _warzone_files(cache):
    """(name, bytes) of warzone2100's English voice files, read from base.wz (a zip)."""
    wz = os.path.join(root(cache), "usr/share/games/warzone2100/base.wz")
    out = []
    with zipfile.ZipFile(wz) as z:
        for n in sorted(z.namelist()):
            if n.endswith(".ogg") and n.startswith(WARZONE_DIRS):
                out.append((n, z.read(n)))
    return out


def _lang(name):
    return name.split("_")[0].split("@")[0]


def speech_files(cache=None):
    """[(group, path)] of every speech recording, sorted; group is "<corpus>/<speaker set>"."""
    cache = cache or default_cache()
    r = root(cache)
    files = []
    kt = os.path.join(r, "usr/share/ktuberling/sounds")
    for lang in sorted(os.listdir(kt)):
        d = os.path.join(kt, lang)
        if os.path.isdir(d):
            files += [(f"ktuberling/{_lang(lang)}", os.path.join(d, f))
                      for f in sorted(os.listdir(d)) if f.endswith(".ogg")]
    kl = os.path.join(r, "usr/share/klettres")
    for lang in sorted(os.listdir(kl)):
        for sub in ("alpha", "syllab"):
            d = os.path.join(kl, lang, sub)
            if os.path.isdir(d):
                files += [(f"klettres/{_lang(lang)}", os.path.join(d, f))
                          for f in sorted(os.listdir(d)) if f.endswith(".ogg")]
    hv = os.path.join(r, HEDGEWARS, "Sounds/voices")
    for voice in sorted(os.listdir(hv)):
        if voice in EXCLUDED_VOICES:
            continue
        d = os.path.join(hv, voice)
        files += [(f"hedgewars/{voice}", os.path.join(d, f))
                  for f in sorted(os.listdir(d)) if f.endswith(".ogg")]
    return files


def split_groups(groups):
    """(train, heldout) sets of speaker groups (see the module docstring)."""
    langs = sorted({g.split("/")[1] for g in groups if g.split("/")[0] in ("ktuberling",
                                                                          "klettres")})
    held_langs = {l for i, l in enumerate(langs) if i % 4 == 1}
    voices = sorted({g.split("/")[1] for g in groups if g.startswith("hedgewars/")})
    held_voices = {v for i, v in enumerate(voices) if i % 4 == 1}
    held = {g for g in groups
            if (g.split("/")[0] in ("ktuberling", "klettres") and g.split("/")[1] in held_langs)
            or (g.startswith("hedgewars/") and g.split("/")[1] in held_voices)}
    return set(groups) - held, held


def _frame_db(x, win=400, hop=160):
    if x.size < win:
        return np.full(1, -200.0)
    fr = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), win)[::hop]
    return 10 * np.log10(np.mean(fr ** 2, axis=1) + 1e-20)


MIN_RANGE_DB = 20.0   # recordings whose loudest frame is < 20 dB over their noise floor are dropped
GATE_DB = -40.0       # what the recording's own noise between its words is turned down by


def prepare(x):
    """A recording made ready to be labelled by energy: frames above max(peak - 35 dB, floor +
    10 dB) are its speech, where floor is the 10th percentile of frame energy. It is trimmed to
    them (20 ms kept either side), and the recording's own noise between them is turned down by
    40 dB with 10 ms ramps, so that the label rule (within 35 dB of the loudest frame) sees only
    the speech. None when the recording is too short (< 0.15 s), silent, or too noisy."""
    db = _frame_db(x)
    peak, floor = db.max(), np.percentile(db, 10)
    if peak < -60 or peak - floor < MIN_RANGE_DB:
        return None
    keep = db > max(peak - 35.0, floor + 10.0)
    on = np.flatnonzero(keep)
    a = max(0, on[0] * 160 - 320)
    b = min(x.size, on[-1] * 160 + 400 + 320)
    if b - a < int(0.15 * SR):
        return None
    # per-sample gain: 1 over kept frames (a frame covers [160 t, 160 t + 400)), else GATE_DB,
    # smoothed by a 10 ms moving average
    g = np.full(x.size, 10 ** (GATE_DB / 20))
    for t in on:
        g[t * 160:t * 160 + 400] = 1.0
    g = np.convolve(g, np.ones(160) / 160, mode="same")
    y = (x * g)[a:b].astype(np.float32)
    fade = min(160, y.size // 4)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    y[:fade] *= ramp
    y[-fade:] *= ramp[::-1]
    return y


def _load(item):
    group, path = item
    return group, prepare(decode(path))


def recordings(cache=None, workers=2, sides=("train", "heldout")):
    """{"train": {group: [arrays]}, "heldout": {group: [arrays]}, "dropped": n} of every usable
    speech recording (warzone2100 in "train"); only the recordings of `sides` are decoded (the
    others' entries stay empty)."""
    cache = cache or default_cache()
    files = speech_files(cache)
    _, held_g = split_groups({g for g, _ in files})

    def side_of(group):
        return "heldout" if group in held_g else "train"

    files = [(g, p) for g, p in files if side_of(g) in sides]
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        loaded = list(ex.map(_load, files))
    wz = []
    if "train" in sides:
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            wz = list(ex.map(lambda nb: ("warzone2100/en", prepare(decode(nb[1]))),
                             _warzone_files(cache)))
    out = {"train": {}, "heldout": {}, "dropped": 0}
    for g, y in loaded + wz:
        if y is None:
            out["dropped"] += 1
            continue
        out[side_of(g)].setdefault(g, []).append(y)
    return out


def music_files(cache=None):
    """{"train": [paths], "heldout": [paths]} of the music tracks, sorted."""
    cache = cache or default_cache()
    r = root(cache)

    def tracks(d):
        d = os.path.join(r, d)
        return [os.path.join(d, f) for f in sorted(os.listdir(d))
                if f.endswith(".ogg") and f not in EXCLUDED_TRACKS]
    return {"train": [p for d in TRAIN_MUSIC_DIRS for p in tracks(d)],
            "heldout": tracks(WESNOTH_MUSIC)}


def music(paths, workers=2):
    """MUSIC_SECONDS of every track, from 10 s in (shorter tracks: what there is)."""
    def one(p):
        x = decode(p, start=10.0, seconds=MUSIC_SECONDS)
        return x if x.size >= 4 * SR else decode(p)
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        tracks = list(ex.map(one, paths))
    return [t for t in tracks if t.size >= 2 * SR and np.sqrt(np.mean(t ** 2)) > 1e-4]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=default_cache(), help="where packages are kept")
    ap.add_argument("--fetch", action="store_true", help="download and unpack the packages")
    ap.add_argument("--summary", action="store_true", help="count what the split holds")
    args = ap.parse_args()
    if args.fetch:
        fetch(args.cache)
        print(f"packages unpacked under {root(args.cache)}")
    if args.summary:
        rec = recordings(args.cache)
        for side in ("train", "heldout"):
            groups = rec[side]
            n = sum(len(v) for v in groups.values())
            sec = sum(y.size for v in groups.values() for y in v) / SR
            print(f"speech {side}: {n} recordings, {sec / 60:.1f} min, groups "
                  + ", ".join(f"{g} ({len(v)})" for g, v in sorted(groups.items())))
        print(f"speech dropped (short, silent or noisy): {rec['dropped']}")
        mf = music_files(args.cache)
        print(f"music: {len(mf['train'])} training tracks, {len(mf['heldout'])} held out")
    if not (args.fetch or args.summary):
        ap.print_help(sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
