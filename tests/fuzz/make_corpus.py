#!/usr/bin/env python3
"""Regenerates the seed corpora in tests/fuzz/corpus/<harness>/ (checked in; run this
only to change them). Needs ImageMagick `convert` and `protoc`; run from anywhere:

    python3 tests/fuzz/make_corpus.py

Each corpus holds a few valid inputs in the formats the servers really see (demo
avatars, the guide's configs) plus edge cases; the whole tree stays well under 1 MB.
"""
import os
import shutil
import struct
import subprocess
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def reset(name):
    d = os.path.join(CORPUS, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def put(d, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def crop_rects():
    d = reset("crop_rects")
    put(d, "demo_3_frames.json", "[[480, 150, 800, 470], [482, 151, 802, 471], [479, 149, 799, 469]]")
    put(d, "one.json", "[[0,0,1,1]]")
    put(d, "empty_array.json", "[]")
    put(d, "floats_integral.json", "[[10.0, 20.0, 330.0, 340.0]]")
    put(d, "float_fraction.json", "[[10.5, 20, 330, 340]]")
    put(d, "negative.json", "[[-1, 0, 10, 10]]")
    put(d, "inverted.json", "[[10, 10, 5, 20]]")
    put(d, "huge_number.json", "[[1e300, 0, 1, 1]]")
    put(d, "int_overflow.json", "[[99999999999999999999, 0, 1, 1]]")
    put(d, "outside_frame.json", "[[1200, 700, 1300, 800]]")
    put(d, "three_coords.json", "[[1, 2, 3]]")
    put(d, "object.json", '{"rects": [[0, 0, 1, 1]]}')
    put(d, "strings.json", '[["0", "0", "1", "1"]]')
    put(d, "nested_entry.json", "[[[0], [0], [1], [1]]]")
    put(d, "deep_64.json", "[" * 64 + "]" * 64)
    put(d, "deep_unclosed_2000.json", "[" * 2000)
    put(d, "long_bad_entry.json", "[[" + ",".join(["1"] * 3000) + "]]")
    put(d, "truncated.json", "[[480, 150, 800, 4")
    put(d, "not_json.json", "\x00\xff garbage")


def config_yaml():
    d = reset("config_yaml")
    for src in ["tests/config/testdata/guide_inference.yaml",
                "tests/config/testdata/guide_compositing.yaml",
                "deploy/inference.yaml", "deploy/compositing.yaml"]:
        path = os.path.join(ROOT, src)
        if os.path.exists(path):
            shutil.copy(path, os.path.join(d, os.path.basename(src).replace(".yaml", "") +
                                           ("_deploy" if src.startswith("deploy") else "") + ".yaml"))
    put(d, "empty.yaml", "")
    put(d, "scalar.yaml", "just a string\n")
    put(d, "unknown_key.yaml", "server:\n  port: \":50051\"\n  no_such_key: 1\n")
    put(d, "wrong_type.yaml", "server:\n  worker_count_per_gpu: many\n")
    put(d, "out_of_range.yaml", "server:\n  queue_size: -5\n  max_batch_size: 99999999999\n")
    put(d, "limits.yaml", "limits:\n  max_image_width: 1024\n  max_json_depth: 4\n  max_frames: 10\n")
    put(d, "models.yaml", "models:\n  a:\n    model_path: /m/a.onnx\n    preload: true\n"
                          "  b:\n    background_dir: /m/b/frames\n    crop_rects_path: /m/b/c.json\n")
    put(d, "aliases.yaml", "a: &a [1, 1, 1, 1]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\n"
                           "server: *c\n")
    put(d, "deep_flow.yaml", "server: " + "[" * 300 + "]" * 300 + "\n")
    put(d, "deep_block.yaml", "".join("  " * i + "k%d:\n" % i for i in range(100)))
    put(d, "tabs_and_bad_indent.yaml", "server:\n\tport: 1\n  x: [\n")
    put(d, "duplicate_keys.yaml", "server:\n  port: \":1\"\n  port: \":2\"\n")
    put(d, "binary_tag.yaml", "server:\n  api_key: !!binary aGVsbG8=\n")
    # Keys are quoted truncated in messages.
    put(d, "long_keys.yaml", "server:\n  " + "k" * 300 + ": 1\n  ? " + "q" * 3000 + "\n  : 2\n"
        "models:\n  " + "m" * 200 + ":\n    model_path: x\n")
    put(d, "float_specials.yaml", "gpus:\n  memory_gb_per_gpu: .nan\ncapacity:\n"
                                  "  idle_timeout_minutes: -.inf\n")


def run(*args, **kw):
    subprocess.run(args, check=True, **kw)


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_decode():
    d = reset("decode_png")
    with tempfile.TemporaryDirectory() as t:
        def convert(name, *args):
            out = os.path.join(t, name)
            # No time chunks: the same script gives the same bytes.
            run("convert", "-seed", "7", *args, "-define", "png:exclude-chunks=date,time", out)
            shutil.copy(out, os.path.join(d, name))

        convert("rgb_16x16.png", "-size", "16x16", "gradient:red-blue", "-depth", "8",
                "-define", "png:color-type=2")
        convert("gray_8x8.png", "-size", "8x8", "gradient:", "-colorspace", "Gray", "-depth", "8")
        convert("rgba_8x8.png", "-size", "8x8", "xc:rgba(10,200,30,0.5)",
                "-define", "png:color-type=6")
        convert("rgb16_4x4.png", "-size", "4x4", "plasma:", "-depth", "16")
        convert("palette_8x8.png", "-size", "8x8", "pattern:checkerboard", "-type", "Palette",
                "-depth", "8")
        convert("interlaced_16x8.png", "-size", "16x8", "gradient:", "-interlace", "PNG")
        convert("one_pixel.png", "-size", "1x1", "xc:white")
        convert("wide_97x3.png", "-size", "97x3", "gradient:green-yellow")
        good = open(os.path.join(d, "rgb_16x16.png"), "rb").read()
    put(d, "truncated.png", good[: len(good) // 2])
    sig = b"\x89PNG\r\n\x1a\n"
    # IHDR claiming 100000 x 100000 RGB (30 GB decoded) with a tiny IDAT.
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    put(d, "huge_dims.png", sig + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) +
        png_chunk(b"IEND", b""))
    # Just over the harness limits (2048): rejected from the header.
    ihdr = struct.pack(">IIBBBBB", 4096, 16, 8, 2, 0, 0, 0)
    put(d, "over_limit_width.png", sig + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) +
        png_chunk(b"IEND", b""))
    put(d, "signature_only.png", sig)
    put(d, "bad_crc.png", good[:29] + b"\x00\x00\x00\x00" + good[33:])


def jpeg_decode():
    d = reset("decode_jpeg")
    with tempfile.TemporaryDirectory() as t:
        def convert(name, *args):
            out = os.path.join(t, name)
            run("convert", "-seed", "7", *args, out)
            shutil.copy(out, os.path.join(d, name))

        convert("baseline_16x16.jpg", "-size", "16x16", "gradient:red-blue", "-quality", "75")
        convert("q100_444_8x8.jpg", "-size", "8x8", "plasma:", "-quality", "100",
                "-sampling-factor", "1x1")
        convert("progressive_24x16.jpg", "-size", "24x16", "gradient:", "-interlace", "JPEG")
        convert("gray_8x8.jpg", "-size", "8x8", "gradient:", "-colorspace", "Gray")
        convert("cmyk_8x8.jpg", "-size", "8x8", "xc:red", "-colorspace", "CMYK")
        convert("odd_33x17.jpg", "-size", "33x17", "plasma:", "-quality", "50")
        convert("restarts_64x16.jpg", "-size", "64x16", "gradient:", "-define",
                "jpeg:restart-interval=1")
        good = open(os.path.join(d, "baseline_16x16.jpg"), "rb").read()
    put(d, "truncated.jpg", good[: len(good) * 2 // 3])
    put(d, "soi_only.jpg", b"\xff\xd8")
    # SOF0 rewritten to claim 60000 x 60000.
    i = good.find(b"\xff\xc0")
    if i >= 0:
        huge = bytearray(good)
        huge[i + 5:i + 9] = struct.pack(">HH", 60000, 60000)
        put(d, "huge_dims.jpg", bytes(huge))
        zero = bytearray(good)
        zero[i + 5:i + 9] = struct.pack(">HH", 0, 16)
        put(d, "zero_height.jpg", bytes(zero))


def raw_audio():
    d = reset("raw_audio")

    def spec(flags, rate_index, start, batch, utterance, pcm=b""):
        return struct.pack("<BBIII", flags, rate_index, start, batch, utterance) + pcm

    tone = b"".join(struct.pack("<h", int(8000 * ((i % 40) - 20) / 20)) for i in range(640))
    # fit mode (bit 0): PCM stretched to the exact length.
    put(d, "fit_16k_b1_first.bin", spec(1 | 2, 0, 0, 0, 1, tone))        # batch 1, utt=2 ... end
    put(d, "fit_16k_b4_mid.bin", spec(1, 0, 30, 3, 2, tone))             # utterance unknown
    put(d, "fit_48k_b8_end.bin", spec(1 | 2, 5, 10, 7, 0, tone))
    put(d, "fit_8k_silence.bin", spec(1, 1, 0, 5, 1))
    put(d, "fit_22050_b2.bin", spec(1, 2, 3, 1, 4, tone))
    put(d, "fit_44100_b1.bin", spec(1, 4, 100, 0, 5, tone))
    put(d, "fit_24k_clip.bin", spec(1 | 8, 3, 0, 0, 1, tone * 4))
    put(d, "fit_sawtooth_full_scale.bin",
        spec(1 | 2, 0, 2, 6, 3, b"".join(struct.pack("<h", (i * 997) % 65536 - 32768)
                                          for i in range(640))))
    # exact bytes without fit mode: 16 kHz, start 0, batch 1, end of a 1-frame utterance.
    put(d, "exact_16k_one_frame.bin", spec(2 | 8, 0, 0, 0, 1, tone))
    put(d, "wrong_length.bin", spec(0, 0, 0, 0, 0, tone[:100]))
    put(d, "odd_length.bin", spec(0, 0, 0, 0, 0, tone[:101]))
    put(d, "empty_pcm.bin", spec(0, 0, 0, 0, 0))
    # wild (bit 2): raw 32-bit fields.
    put(d, "wild_negative_start.bin", spec(4 | 1, 0, 0xFFFFFFF0, 2, 0, tone))
    put(d, "wild_int_max.bin", spec(4 | 1, 0, 0x7FFFFFF0, 4, 0, tone))
    # The last frame index the spec allows (start + batch + 13 <= 2^31 - 1), open-ended and
    # at the end of an utterance.
    put(d, "wild_near_int_max.bin", spec(4 | 1, 0, 2147483629, 4, 0, tone))
    put(d, "wild_near_int_max_end_48k.bin", spec(4 | 2 | 1, 5, 2147483629, 4, 2147483633, tone))
    put(d, "wild_zero_batch.bin", spec(4, 0, 0, 0, 0, tone))
    put(d, "wild_end_mismatch.bin", spec(4 | 2 | 1, 0, 5, 3, 20, tone))
    put(d, "bad_rate.bin", spec(1, 200, 1234, 5678, 0, tone))
    put(d, "slice_and_clip.bin", spec(8 | 2, 0, 0, 2, 1, tone * 3))


def proto_text_bytes(data):
    return "".join("\\%03o" % b for b in data)


def infer_request():
    d = reset("infer_request")
    proto_dir = os.path.join(ROOT, "proto")

    def encode(name, text):
        out = subprocess.run(["protoc", "--proto_path=" + proto_dir,
                              "--encode=inference.InferBatchRequest", "inference.proto"],
                             input=text.encode(), stdout=subprocess.PIPE, check=True).stdout
        put(d, name, out)

    visual_u8 = bytes((i * 7) % 256 for i in range(6 * 16 * 16))
    visual_f32 = b"".join(struct.pack("<f", ((i * 7) % 256) / 255.0) for i in range(6 * 16 * 16))
    audio = struct.pack("<f", 0.25) * 8192
    tone = b"".join(struct.pack("<h", int(8000 * ((i % 40) - 20) / 20)) for i in range(640))
    base = 'model_id: "fuzz-model" batch_size: 1 '
    encode("uint8_features.pb", base + 'visual_format: VISUAL_UINT8 output_format: UINT8 '
           'visual_frames: "%s" audio_features: "%s"' % (proto_text_bytes(visual_u8),
                                                       proto_text_bytes(audio)))
    encode("float32_features.pb", base + 'visual_frames: "%s" audio_features: "%s"' %
           (proto_text_bytes(visual_f32), proto_text_bytes(audio)))
    encode("raw_audio_one_frame.pb", base + 'visual_format: VISUAL_UINT8 visual_frames: "%s" '
           'raw_audio: "%s" sample_rate: 16000 utterance_frames: 1 end_of_utterance: true' %
           (proto_text_bytes(visual_u8), proto_text_bytes(tone)))
    encode("raw_audio_8k_short.pb", base + 'visual_format: VISUAL_UINT8 visual_frames: "%s" '
           'raw_audio: "%s" sample_rate: 8000 utterance_frames: 1' %
           (proto_text_bytes(visual_u8), proto_text_bytes(tone[:640])))
    encode("both_audio_forms.pb", base + 'visual_format: VISUAL_UINT8 visual_frames: "%s" '
           'raw_audio: "%s" audio_features: "%s"' % (proto_text_bytes(visual_u8),
                                                     proto_text_bytes(tone),
                                                     proto_text_bytes(audio[:64])))
    encode("unknown_model.pb", 'model_id: "no-such-model" batch_size: 1 visual_format: VISUAL_UINT8 '
           'visual_frames: "%s" audio_features: "%s"' % (proto_text_bytes(visual_u8),
                                                       proto_text_bytes(audio)))
    encode("bad_model_id.pb", 'model_id: "../../etc/passwd" batch_size: 1')
    encode("batch_zero.pb", 'model_id: "fuzz-model" batch_size: 0')
    encode("batch_too_big.pb", 'model_id: "fuzz-model" batch_size: 1000000')
    encode("negative_start.pb", base + 'start_frame_idx: -3 raw_audio: "\\000\\000"')
    encode("unknown_enums.pb", base + 'visual_format: 7 output_format: 9 audio_features: "\\000"')
    encode("short_visual.pb", base + 'visual_format: VISUAL_UINT8 visual_frames: "\\001\\002" '
           'audio_features: "%s"' % proto_text_bytes(audio))
    nan = struct.pack("<f", float("nan")) * 8192
    encode("nan_features.pb", base + 'visual_format: VISUAL_UINT8 visual_frames: "%s" '
           'audio_features: "%s"' % (proto_text_bytes(visual_u8), proto_text_bytes(nan)))
    put(d, "malformed.pb", b"\x0a\xff\xff\xff\xff\x0f")
    put(d, "empty.pb", b"")


def composite_request():
    d = reset("composite_request")
    proto_dir = os.path.join(ROOT, "proto")

    def encode(name, text):
        out = subprocess.run(["protoc", "--proto_path=" + proto_dir,
                              "--encode=compositing.CompositeBatchRequest", "compositing.proto"],
                             input=text.encode(), stdout=subprocess.PIPE, check=True).stdout
        put(d, name, out)

    audio = proto_text_bytes(struct.pack("<f", 0.25) * 8192)
    tone = b"".join(struct.pack("<h", int(8000 * ((i % 40) - 20) / 20)) for i in range(640))
    base = 'model_id: "fuzz-avatar" '
    encode("jpeg_b2.pb", base + 'batch_size: 2 start_frame_idx: 3 audio_features: "%s"' % audio)
    encode("raw_rgb_pingpong_b1.pb", base + 'batch_size: 1 start_frame_idx: 13 output_format: RAW_RGB '
           'loop_mode: PING_PONG audio_features: "%s"' % audio)
    encode("jpeg_q1_wrap_b4.pb", base + 'batch_size: 4 start_frame_idx: 7 jpeg_quality: 1 '
           'loop_mode: WRAP audio_features: "%s"' % audio)
    encode("raw_audio_b1.pb", base + 'batch_size: 1 raw_audio: "%s" sample_rate: 16000 '
           'utterance_frames: 1 end_of_utterance: true' % proto_text_bytes(tone))
    encode("raw_audio_48k_wrong_len.pb", base + 'batch_size: 1 raw_audio: "%s" sample_rate: 48000'
           % proto_text_bytes(tone))
    encode("bad_quality.pb", base + 'batch_size: 1 jpeg_quality: 101 audio_features: "%s"' % audio)
    encode("bad_enums.pb", base + 'batch_size: 1 output_format: 5 loop_mode: 9 audio_features: "\\000"')
    encode("negative_start.pb", base + 'batch_size: 1 start_frame_idx: -1 audio_features: "%s"' % audio)
    encode("huge_start.pb", base + 'batch_size: 1 start_frame_idx: 2147483647 audio_features: "%s"' % audio)
    encode("batch_too_big.pb", base + 'batch_size: 65 audio_features: "%s"' % audio)
    encode("visual_wrong_size.pb", base + 'batch_size: 1 visual_frames: "\\001\\002\\003\\004" '
           'audio_features: "%s"' % audio)
    encode("unknown_model.pb", 'model_id: "nobody" batch_size: 1 audio_features: "%s"' % audio)
    encode("traversal_model.pb", 'model_id: "../fuzz-avatar" batch_size: 1')
    put(d, "empty.pb", b"")


if __name__ == "__main__":
    crop_rects()
    config_yaml()
    png_decode()
    jpeg_decode()
    raw_audio()
    infer_request()
    composite_request()
    total = 0
    for base, _, files in os.walk(CORPUS):
        total += sum(os.path.getsize(os.path.join(base, f)) for f in files)
    print("corpus: %d bytes" % total)
