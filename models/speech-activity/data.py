"""Speech-activity data for the speech-activity recipe: espeak-ng speech in many voices and
recorded speech (sources.py), mixed with generated and recorded backgrounds, passed through
random channels, labelled per 10 ms frame of the ssmserve log-mel frontend.

Everything is deterministic: numpy Generators seeded from fixed numbers, espeak-ng (1.51) and sox
called with fixed arguments. Voices and background types are split into a training part and a
held-out part (see split_voices and TRAIN_NOISES / HELDOUT_NOISES).

Labels: a frame t covers samples [t*hop, t*hop + win) (exactly the frontend's framing). For every
utterance, the Hann-windowed energy of its clean signal over that span is compared with the
utterance's loudest frame: frames within LABEL_DB of it are speech. Gaps shorter than
LABEL_MIN_GAP frames are filled and islands shorter than LABEL_MIN_RUN frames removed (on the union
over the utterances of a clip).
"""

import concurrent.futures
import json
import os
import subprocess
import sys
import wave

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "python"))
sys.path.insert(0, HERE)
import sources  # noqa: E402
import ssm_torch  # noqa: E402

SR = 16000
FRONTEND = {"type": "log_mel", "sample_rate": SR, "win_length": 400, "hop_length": 160,
            "n_fft": 512, "n_mels": 80, "f_min": 0.0, "f_max": 8000.0, "log_floor": 1e-10}
HOP, WIN = FRONTEND["hop_length"], FRONTEND["win_length"]

LABEL_DB = 35.0       # frames within 35 dB of the utterance's loudest frame are speech
LABEL_MIN_GAP = 10    # fill non-speech gaps shorter than 100 ms (within and between words)
LABEL_MIN_RUN = 3     # drop speech islands shorter than 30 ms

SYNTHETIC_NOISES = ["white", "pink", "hum", "clicks", "tones"]
# recorded backgrounds: game music, and babble of overlapped recorded voices (sources.py); for
# training they come from the training tracks and speakers, for evaluation from held-out ones
RECORDED_NOISES = ["music", "babble"]
TRAIN_NOISES = SYNTHETIC_NOISES + RECORDED_NOISES
HELDOUT_NOISES = ["brown", "machine"]
ALL_NOISES = TRAIN_NOISES + HELDOUT_NOISES

# espeak-ng variant files left out altogether: "whisper" (a whispered male voice; the file of the
# whispered female voice is "whisperf" and stays in)
EXCLUDED_VARIANTS = {"whisper"}


# ----------------------------------------------------------------------------------------------
# Voices
# ----------------------------------------------------------------------------------------------

def _espeak_list(arg):
    out = subprocess.run(["espeak-ng", arg], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    return rows


def _speaks(lang):
    return subprocess.run(["espeak-ng", "-v", lang, "-q", "ba"], capture_output=True).returncode == 0


def list_voices():
    """(languages, variants) as espeak-ng lists them, sorted; languages that fail to speak a
    syllable on this installation are left out."""
    langs = sorted({r[1] for r in _espeak_list("--voices")})
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        ok = list(ex.map(_speaks, langs))
    langs = [l for l, good in zip(langs, ok) if good]
    variants = sorted({r[4].split("/")[-1] for r in _espeak_list("--voices=variant")}
                      - EXCLUDED_VARIANTS)
    return langs, variants


def split_voices():
    """Deterministic split: every 5th language and every 5th variant (in sorted order, offset 2)
    are held out. Training voices combine training languages with training variants (or none);
    held-out voices combine held-out languages with any variant, so both the language and, most
    of the time, the variant are unseen."""
    langs, variants = list_voices()
    held_l = [l for i, l in enumerate(langs) if i % 5 == 2]
    train_l = [l for i, l in enumerate(langs) if i % 5 != 2]
    held_v = [v for i, v in enumerate(variants) if i % 5 == 2]
    train_v = [v for i, v in enumerate(variants) if i % 5 != 2]
    return {"train_languages": train_l, "train_variants": train_v,
            "heldout_languages": held_l, "heldout_variants": held_v}


# ----------------------------------------------------------------------------------------------
# Speech synthesis
# ----------------------------------------------------------------------------------------------

_ONSETS = ["", "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
           "ch", "sh", "th", "br", "tr", "st", "pl", "kr", "gl", "j", "y"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea", "io", "y"]
_CODAS = ["", "", "", "n", "s", "r", "l", "t", "m", "k", "nd", "st"]


def random_text(rng):
    """Pseudo-words (1-4 syllables) in 1-2 phrases, separated by commas or full stops."""
    phrases = []
    for _ in range(int(rng.integers(1, 3))):
        words = []
        for _ in range(int(rng.integers(1, 6))):
            syl = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
                          + _CODAS[rng.integers(len(_CODAS))]
                          for _ in range(int(rng.integers(1, 5))))
            words.append(syl)
        phrases.append(" ".join(words))
    text = ""
    for i, p in enumerate(phrases):
        text += p + (", " if rng.random() < 0.5 and i + 1 < len(phrases) else ". ")
    return text.strip()


def speech_specs(n, seed, languages, variants):
    """n utterance specifications (voice, pitch, rate, amplitude, word gap, text)."""
    rng = np.random.default_rng(seed)
    specs = []
    for _ in range(n):
        lang = languages[rng.integers(len(languages))]
        var = variants[rng.integers(len(variants))] if rng.random() < 0.85 else None
        specs.append({"voice": lang + ("+" + var if var else ""),
                      "pitch": int(rng.integers(0, 100)),
                      "rate": int(rng.integers(90, 260)),
                      "amplitude": int(rng.integers(40, 200)),
                      "gap": int(rng.integers(0, 6)),
                      "text": random_text(rng)})
    return specs


def synthesize(spec):
    """float32 samples at 16 kHz (espeak-ng's 22050 Hz output resampled by sox)."""
    cmd = ["espeak-ng", "-v", spec["voice"], "-p", str(spec["pitch"]), "-s", str(spec["rate"]),
           "-a", str(spec["amplitude"]), "-g", str(spec["gap"]), "--stdout", spec["text"]]
    wav = subprocess.run(cmd, capture_output=True, check=True).stdout
    raw = subprocess.run(["sox", "-t", "wav", "-", "-t", "raw", "-e", "floating-point", "-b", "32",
                          "-r", str(SR), "-c", "1", "-"], input=wav, capture_output=True,
                         check=True).stdout
    x = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    nz = np.flatnonzero(np.abs(x) > 1e-4)       # trim leading/trailing silence
    if nz.size == 0:
        return np.zeros(0, np.float32)
    return x[nz[0]:nz[-1] + 1].copy()


def synthesize_all(specs, workers=2):
    """Synthesises in parallel (subprocesses); results in spec order (deterministic)."""
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        out = list(ex.map(synthesize, specs))
    return [x for x in out if x.size > SR // 5]   # drop anything shorter than 0.2 s


# ----------------------------------------------------------------------------------------------
# Recorded speech and music (sources.py)
# ----------------------------------------------------------------------------------------------

def phrases(groups, n, seed):
    """n phrases of recorded speech: a speaker group drawn uniformly, then 1-4 of its recordings
    at +-4 dB of one another, joined by 80-600 ms pauses."""
    rng = np.random.default_rng(seed)
    names = sorted(groups)
    out = []
    for _ in range(n):
        g = groups[names[rng.integers(len(names))]]
        parts = []
        for j in range(int(rng.integers(1, 5))):
            if j:
                parts.append(np.zeros(int(rng.uniform(0.08, 0.6) * SR), np.float32))
            r = g[rng.integers(len(g))]
            parts.append(r * np.float32(10 ** (rng.uniform(-4, 4) / 20) / (np.abs(r).max() + 1e-9)))
        out.append(np.concatenate(parts))
    return out


def recorded_sets(n_phrases, seed, cache=None, sides=("train", "heldout")):
    """{side: {"phrases": [...], "recordings": [...], "music": [...]}} for each of `sides`
    ("train", "heldout": sources.py's split), or None when the packages are not fetched. A side
    is the same whether or not the other is built."""
    if not sources.available(cache):
        return None
    rec = sources.recordings(cache, sides=sides)
    mf = sources.music_files(cache)
    out = {}
    for i, side in enumerate(("train", "heldout")):
        if side not in sides:
            continue
        groups = rec[side]
        out[side] = {"phrases": phrases(groups, n_phrases, seed + i),
                     "recordings": [y for g in sorted(groups) for y in groups[g]],
                     "music": sources.music(mf[side])}
    return out


# ----------------------------------------------------------------------------------------------
# Backgrounds
# ----------------------------------------------------------------------------------------------

def _shaped_noise(rng, n, exponent):
    """Gaussian noise with power spectrum ~ 1/f^exponent (f > 20 Hz), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1.0 / SR), 20.0)
    x = np.fft.irfft(spec / f ** (exponent / 2.0), n)
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def _excerpt(rng, x, n):
    """n samples of x from a random offset (x repeated when shorter)."""
    if x.size < n + 1:
        x = np.tile(x, n // max(1, x.size) + 2)
    a = int(rng.integers(0, x.size - n))
    return x[a:a + n].astype(np.float64)


def make_babble(rng, n, utterances):
    """5-10 talkers, each a run of utterances with 50-500 ms pauses, at +-3 dB of one another."""
    x = np.zeros(n)
    for _ in range(int(rng.integers(5, 11))):
        parts, total = [], 0
        while total < n + SR:
            u = utterances[rng.integers(len(utterances))].astype(np.float64)
            u = u / (np.sqrt(np.mean(u ** 2)) + 1e-12)
            gap = np.zeros(int(rng.uniform(0.05, 0.5) * SR))
            parts += [u, gap]
            total += u.size + gap.size
        x += 10 ** (rng.uniform(-3, 3) / 20) * _excerpt(rng, np.concatenate(parts), n)
    return x


def make_noise(kind, n, rng, recorded=None):
    """n samples of background `kind`, unit RMS (float64). recorded: {"music": [tracks],
    "babble": [utterances]}, needed by the recorded kinds."""
    t = np.arange(n) / SR
    if kind in RECORDED_NOISES:
        if not recorded or not recorded.get(kind):
            raise ValueError(f"background {kind!r} needs recorded sources (sources.py --fetch)")
        pool = recorded[kind]
        if kind == "music":
            x = _excerpt(rng, pool[rng.integers(len(pool))], n)
        else:
            x = make_babble(rng, n, pool)
    elif kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        x = _shaped_noise(rng, n, 1.0)
    elif kind == "brown":
        x = _shaped_noise(rng, n, 2.0)
    elif kind == "hum":
        f0 = (50.0 if rng.random() < 0.5 else 60.0) * rng.uniform(0.99, 1.01)
        x = np.zeros(n)
        for h in range(1, int(rng.integers(3, 16))):
            x += rng.uniform(0.1, 1.0) / h ** rng.uniform(0.3, 1.2) * np.sin(
                2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
        x += 10 ** (rng.uniform(-4, -2)) * rng.standard_normal(n)
    elif kind == "clicks":
        x = 10 ** (rng.uniform(-3, -1.5)) * rng.standard_normal(n)
        rate = rng.uniform(1.0, 25.0)
        for pos in np.flatnonzero(rng.random(n) < rate / SR):
            L = int(rng.integers(16, 160))
            burst = rng.standard_normal(L) * np.exp(-np.arange(L) / rng.uniform(3, 40))
            burst *= 10 ** rng.uniform(-0.5, 1.0)
            x[pos:pos + L] += burst[:n - pos]
    elif kind == "tones":                  # music-like: harmonic notes with vibrato and decay
        x = np.zeros(n)
        for _ in range(int(rng.integers(1, 4))):                     # voices
            pos = 0
            base = 55.0 * 2 ** rng.uniform(1, 4)
            while pos < n:
                L = int(rng.uniform(0.08, 0.7) * SR)
                f0 = base * 2 ** (int(rng.choice([0, 2, 3, 5, 7, 8, 10, 12, 14, 15])) / 12.0)
                tt = np.arange(L) / SR
                vib = rng.uniform(0, 0.006) * np.sin(2 * np.pi * rng.uniform(4, 7) * tt)
                note = np.zeros(L)
                decay = rng.uniform(0.3, 1.5)
                for h in range(1, int(rng.integers(2, 10))):
                    note += rng.uniform(0.2, 1.0) / h * np.sin(
                        2 * np.pi * f0 * h * tt * (1 + vib) + rng.uniform(0, 2 * np.pi))
                env = np.minimum(1.0, tt / 0.01) * np.exp(-tt * decay * rng.uniform(1, 6))
                x[pos:pos + L] += (note * env)[:n - pos]
                pos += L if rng.random() < 0.85 else L + int(rng.uniform(0.05, 0.4) * SR)
        x += 1e-3 * rng.standard_normal(n)
    elif kind == "machine":
        # motor/fan/engine-like: noise shaped by a few spectral resonances, a slow rotation
        # component, and slow amplitude modulation
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1.0 / SR)
        shape = 0.05 * np.ones_like(f)
        for _ in range(int(rng.integers(2, 6))):
            fc, bw = rng.uniform(60, 3000), rng.uniform(20, 400)
            shape += rng.uniform(0.3, 1.0) * np.exp(-0.5 * ((f - fc) / bw) ** 2)
        x = np.fft.irfft(spec * shape / np.maximum(f, 30.0) ** 0.5, n)
        x /= np.sqrt(np.mean(x ** 2)) + 1e-12
        frot = rng.uniform(15, 120)
        x += rng.uniform(0, 1.0) * np.sin(2 * np.pi * frot * t) + rng.uniform(0, 0.5) * np.sin(
            4 * np.pi * frot * t)
        x *= 1.0 + rng.uniform(0, 0.4) * np.sin(2 * np.pi * rng.uniform(0.1, 2.0) * t)
    else:
        raise ValueError(kind)
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


# ----------------------------------------------------------------------------------------------
# Labels and clips
# ----------------------------------------------------------------------------------------------

_HANN = ssm_torch.hann_periodic(WIN)


def frame_energy(x):
    """Hann-windowed energy of every frontend frame of x (frame t = samples [t*hop, t*hop+win))."""
    T = ssm_torch.n_frames(x.size, FRONTEND)
    if T == 0:
        return np.zeros(0)
    fr = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), WIN)[::HOP][:T]
    return (fr * _HANN) ** 2 @ np.ones(WIN)


def clean_up(mask):
    """Fill gaps shorter than LABEL_MIN_GAP frames, then drop runs shorter than LABEL_MIN_RUN."""
    m = mask.copy()
    T = m.size
    on = np.flatnonzero(m)
    if on.size:
        for a, b in zip(on[:-1], on[1:]):
            if 1 < b - a <= LABEL_MIN_GAP:
                m[a:b] = True
    t = 0
    while t < T:
        if m[t]:
            e = t
            while e < T and m[e]:
                e += 1
            if e - t < LABEL_MIN_RUN:
                m[t:e] = False
            t = e
        else:
            t += 1
    return m


def random_eq(x, rng, max_db=12.0):
    """A random smooth spectral EQ: 2-6 Gaussian bumps of +-max_db on a log-frequency axis."""
    n = x.size
    f = np.maximum(np.fft.rfftfreq(n, 1.0 / SR), 20.0)
    lf = np.log2(f)
    gain_db = np.zeros_like(f)
    for _ in range(int(rng.integers(2, 7))):
        gain_db += rng.uniform(-max_db, max_db) * np.exp(
            -0.5 * ((lf - rng.uniform(np.log2(50), np.log2(7000))) / rng.uniform(0.2, 1.5)) ** 2)
    return np.fft.irfft(np.fft.rfft(x) * 10 ** (gain_db / 20), n)


def augment_noise(x, rng):
    """Training-only variety for a background: random_eq with probability 0.5, a slow level
    modulation (0.1-3 Hz, depth up to 0.6) with probability 0.3, and a low-pass at 1-5 kHz (a
    band-limited noise) with probability 0.2. Unit RMS out."""
    n = x.size
    if rng.random() < 0.5:
        x = random_eq(x, rng)
    if rng.random() < 0.3:
        t = np.arange(n) / SR
        x = x * (1 + rng.uniform(0, 0.6) * np.sin(2 * np.pi * rng.uniform(0.1, 3) * t
                                                   + rng.uniform(0, 2 * np.pi)))
    if rng.random() < 0.2:
        x = band_filter(x, hi=rng.uniform(1000, 5000))
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


# ----------------------------------------------------------------------------------------------
# Channels: what lies between the talker and the server
# ----------------------------------------------------------------------------------------------

CHANNELS = ["wideband", "lowpass", "telephone"]
CODECS = ["pcm16", "u-law", "a-law", "gsm"]
_CODEC_ARGS = {"pcm16": ["-t", "raw", "-e", "signed-integer", "-b", "16"],
               "u-law": ["-t", "raw", "-e", "u-law", "-b", "8"],
               "a-law": ["-t", "raw", "-e", "a-law", "-b", "8"],
               "gsm": ["-t", "gsm"]}
_F32 = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1"]


def band_filter(x, lo=None, hi=None):
    """Zero-phase FFT filter passing lo..hi Hz; the edges are raised-cosine on a log-frequency
    axis, 0.6 octave wide below lo and 0.2 octave wide above hi (a codec's steep top)."""
    n = x.size
    f = np.maximum(np.fft.rfftfreq(n, 1.0 / SR), 1.0)
    g = np.ones_like(f)

    def edge(u):
        return 0.5 - 0.5 * np.cos(np.pi * np.clip(u, 0.0, 1.0))
    if lo:
        g *= edge((np.log2(f) - np.log2(lo)) / 0.6 + 0.5)
    if hi:
        g *= edge((np.log2(hi) - np.log2(f)) / 0.2 + 0.5)
    return np.fft.irfft(np.fft.rfft(x) * g, n)


def narrowband(x, codec):
    """x (16 kHz) through an 8 kHz link: sox resamples it to 8 kHz and encodes it with codec,
    then decodes and resamples back to 16 kHz (no dither, repeatable). Same length as x."""
    enc = subprocess.run(["sox", "-R"] + _F32 + ["-r", str(SR), "-"] + ["-D"]
                         + _CODEC_ARGS[codec] + ["-r", "8000", "-c", "1", "-"],
                         input=np.clip(x, -1.0, 1.0).astype("<f4").tobytes(),
                         capture_output=True, check=True).stdout
    dec = subprocess.run(["sox", "-R"] + _CODEC_ARGS[codec] + ["-r", "8000", "-c", "1", "-"]
                         + _F32 + ["-r", str(SR), "-"], input=enc, capture_output=True,
                         check=True).stdout
    y = np.frombuffer(dec, dtype="<f4").astype(np.float64)
    out = np.zeros(x.size)
    out[:min(x.size, y.size)] = y[:x.size]
    return out


def telephone(x, rng, codec=None):
    """A telephone line: band-pass with edges drawn from 200-400 Hz and 3.1-3.6 kHz, then an
    8 kHz link through codec (drawn from CODECS when None). Returns (signal, codec)."""
    codec = codec or CODECS[rng.integers(len(CODECS))]
    y = band_filter(x, lo=rng.uniform(200, 400), hi=rng.uniform(3100, 3600))
    peak = np.abs(y).max()
    scale = 0.95 / peak if peak > 0.95 else 1.0        # the codecs clip at full scale
    return narrowband(y * scale, codec) / scale, codec


def reverb(x, rng):
    """A synthetic room: exponentially decaying noise (RT60 0.2-0.9 s) after a direct path
    -3 to +12 dB over the reverberant energy."""
    rt60 = rng.uniform(0.2, 0.9)
    L = int(rt60 * SR)
    t = np.arange(L) / SR
    h = rng.standard_normal(L) * 10 ** (-3.0 * t / rt60)
    h[0] = np.sqrt(np.sum(h[1:] ** 2)) * 10 ** (rng.uniform(-3, 12) / 20)
    m = 1 << int(np.ceil(np.log2(x.size + L)))
    return np.fft.irfft(np.fft.rfft(x, m) * np.fft.rfft(h, m), m)[:x.size]


def apply_channel(x, rng, channel):
    """x through channel: "wideband" (as it is), "lowpass" (cut-off drawn from 3.4-8 kHz, a
    band-limited microphone or link) or "telephone". Returns (signal, info)."""
    if channel == "wideband":
        return x, {}
    if channel == "lowpass":
        hi = rng.uniform(3400, 8000)
        return band_filter(x, hi=hi), {"cutoff": round(hi)}
    if channel == "telephone":
        y, codec = telephone(x, rng)
        return y, {"codec": codec}
    raise ValueError(channel)


def make_clip(rng, utterances, noises, n_samples, snr_db=None, noise_kind=None,
              speech_prob=0.75, clean_prob=0.12, augment=True, recorded=None, channel=None):
    """One clip: (pcm16 samples, frame labels (bool), info dict).

    utterances: list of float32 arrays to draw from; noises: background kinds to draw from;
    recorded: sources for the recorded backgrounds (make_noise).
    snr_db / noise_kind / channel fix them (evaluation); otherwise drawn at random (training):
    speech present with speech_prob, 1-3 utterances at random positions, random levels, a clean
    clip (no added noise) with clean_prob, otherwise SNR uniform in [-5, 30] dB. augment
    (training only; evaluation clips use augment=False): a second background, augment_noise,
    reverberation of the speech (p 0.2), a channel when none is given (telephone 0.3, lowpass
    0.2, wideband 0.5), microphone colouration (random_eq +-10 dB and a 50-250 Hz high-pass, p
    0.4) and a slow level change (+-10 dB over the clip, p 0.2). The SNR is set before the
    channel, on the wideband signals; the labels come from the clean, dry utterances."""
    T = ssm_torch.n_frames(n_samples, FRONTEND)
    speech = np.zeros(n_samples)
    labels = np.zeros(T, bool)
    has_speech = snr_db is not None or rng.random() < speech_prob
    if has_speech:
        k = int(rng.integers(1, 4))
        pos = int(rng.uniform(0, 1.5) * SR)
        for _ in range(k):
            u = utterances[rng.integers(len(utterances))].astype(np.float64)
            if pos >= n_samples - SR // 4:
                break
            u = u[:n_samples - pos] * 10 ** (rng.uniform(-6, 6) / 20) / (np.abs(u).max() + 1e-9)
            seg = np.zeros(n_samples)
            seg[pos:pos + u.size] = u
            e = frame_energy(seg)
            labels |= e > e.max() * 10 ** (-LABEL_DB / 10)
            speech += seg
            pos += u.size + int(rng.uniform(0.2, 2.0) * SR)
        labels = clean_up(labels)
        if augment and rng.random() < 0.2:
            speech = reverb(speech, rng)
    # speech level, then the background at the SNR (speech power over its labelled frames)
    level_db = rng.uniform(-40, -3)            # peak of the speech, dBFS
    if has_speech and labels.any():
        speech *= 10 ** (level_db / 20) / (np.abs(speech).max() + 1e-12)
        act = np.zeros(n_samples, bool)
        for t in np.flatnonzero(labels):
            act[t * HOP:t * HOP + WIN] = True
        p_speech = np.mean(speech[act] ** 2)
    else:
        speech[:] = 0.0
        labels[:] = False
        p_speech = None
    kind = noise_kind if noise_kind is not None else noises[rng.integers(len(noises))]
    if augment and p_speech is None and rng.random() < 0.2:
        kind = "silence"                       # training: some clips of digital silence
    if snr_db is None:
        snr = None if (p_speech is not None and rng.random() < clean_prob) else rng.uniform(-5, 30)
    else:
        snr = None if snr_db == "clean" else float(snr_db)
    noise = np.zeros(n_samples)
    if kind != "silence" and (snr is not None or p_speech is None):
        noise = make_noise(kind, n_samples, rng, recorded)
        if augment and rng.random() < 0.3:             # training: a second background
            k2 = noises[rng.integers(len(noises))]
            noise += 10 ** (rng.uniform(-15, 0) / 20) * make_noise(k2, n_samples, rng, recorded)
            noise /= np.sqrt(np.mean(noise ** 2)) + 1e-12
        if augment:
            noise = augment_noise(noise, rng)
        if p_speech is not None:
            noise *= np.sqrt(p_speech / 10 ** (snr / 10))
        else:
            noise *= 10 ** (rng.uniform(-70, -10) / 20)   # noise-only clip at a random level
    x = speech + noise
    if channel is None:
        r = rng.random() if augment else 1.0
        channel = "telephone" if r < 0.3 else "lowpass" if r < 0.5 else "wideband"
    chan_info = {}
    if x.any():
        x, chan_info = apply_channel(x, rng, channel)
    if augment and rng.random() < 0.4:                 # microphone colouration
        x = band_filter(random_eq(x, rng, 10.0), lo=rng.uniform(50, 250))
    if augment and rng.random() < 0.2:                 # a slow level change over the clip
        x = x * 10 ** (np.linspace(0.0, rng.uniform(-10, 10), n_samples) / 20)
    peak = np.abs(x).max()
    if peak > 0.99:
        x *= 0.99 / peak
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
    return pcm, labels, dict({"snr": "clean" if snr is None and p_speech is not None else
                              (None if p_speech is None else round(snr, 1)),
                              "noise": kind if noise.any() else "silence",
                              "speech": bool(labels.any()), "channel": channel}, **chan_info)


def pcm_to_float(pcm):
    return pcm.astype(np.float32) / 32768.0


def write_wav(path, pcm16):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm16.astype("<i2").tobytes())


def read_wav(path):
    with wave.open(path, "rb") as w:
        assert w.getframerate() == SR and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()


# ----------------------------------------------------------------------------------------------
# The held-out evaluation set
# ----------------------------------------------------------------------------------------------

EVAL_SEED = 777
EVAL_SNRS = ["clean", 20, 10, 5, 0, -5]
EVAL_SECONDS = 8.0


def heldout_utterances(n, seed=EVAL_SEED):
    sp = split_voices()
    specs = speech_specs(n, seed, sp["heldout_languages"],
                         sp["heldout_variants"] + sp["train_variants"])
    return synthesize_all(specs)


def save_set(out_dir, clips):
    """Writes clipNNNN.wav + clipNNNN.labels.npy and index.json; returns the index."""
    os.makedirs(out_dir, exist_ok=True)
    index = []
    for name, pcm, lab, info in clips:
        write_wav(os.path.join(out_dir, name + ".wav"), pcm)
        np.save(os.path.join(out_dir, name + ".labels.npy"), lab)
        index.append(dict(name=name, **info))
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    return index
