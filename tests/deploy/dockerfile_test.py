#!/usr/bin/env python3
"""The Dockerfiles build with the README's commands and nothing else.

Images cannot be pulled or built here, so this parses both sides:
  - README.md: every command line in its fenced ```bash blocks (comments stripped);
  - deploy/docker/Dockerfile{,.cuda}: instructions (continuations joined), stages.
It checks that
  - the build stage (`FROM debian:12 AS build`) runs only README commands, in order,
    the README's setup command for that image first;
  - the environment variables those commands set are ones scripts/setup.sh reads;
  - the runtime stage builds nothing (no setup, cmake or compiler) and copies only
    from the build stage's outputs that exist in a built tree (build/lipsync, the
    bundled ONNX Runtime, web/);
  - the base images are the documented ones (debian:12-slim; nvidia/cuda 13 cuDNN runtime);
  - deploy/docker/collect-libs.sh, run on the real build/lipsync, collects every library
    the binary links except the C/C++ runtime, so the runtime stage's LD_LIBRARY_PATH
    resolves them all from the copy.
Usage: dockerfile_test.py SOURCE_DIR BUILD_DIR
"""
import os
import re
import subprocess
import sys
import tempfile
import unittest

SOURCE = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
BUILD = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(SOURCE, "build"))


def read(path):
    with open(os.path.join(SOURCE, path), encoding="utf-8") as f:
        return f.read()


def readme_commands():
    """Command lines of README.md's ```bash blocks, trailing comments removed."""
    commands, in_bash = [], False
    for line in read("README.md").splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            in_bash = (not in_bash) and stripped[3:].strip() == "bash"
            continue
        if in_bash and stripped and not stripped.startswith("#"):
            commands.append(normalize(strip_comment(stripped)))
    return commands


def strip_comment(line):
    """The line up to a `#` that starts a shell comment (after a blank, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def normalize(command):
    return " ".join(command.split())


def dockerfile_stages(path):
    """[(from_line, [(instruction, argument)])] with continuation lines joined."""
    lines, current = [], ""
    for raw in read(path).splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        lines.append(current + raw)
        current = ""
    stages = []
    for line in lines:
        instruction, _, argument = line.strip().partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append((normalize(argument), []))
        else:
            stages[-1][1].append((instruction, normalize(argument)))
    return stages


class DockerfileTest(unittest.TestCase):
    def check_image(self, dockerfile, setup_command, runtime_base):
        stages = dockerfile_stages(dockerfile)
        self.assertEqual(len(stages), 2, f"{dockerfile}: expected a build and a runtime stage")
        (build_from, build), (runtime_from, runtime) = stages
        self.assertEqual(build_from, "debian:12 AS build", dockerfile)
        self.assertRegex(runtime_from, runtime_base, dockerfile)

        documented = readme_commands()
        runs = [arg for ins, arg in build if ins == "RUN"]
        self.assertTrue(runs, f"{dockerfile}: no RUN in the build stage")
        for run in runs:
            self.assertIn(run, documented,
                          f"{dockerfile}: build step `{run}` is not a README command")
        self.assertEqual(runs[0], setup_command,
                         f"{dockerfile}: the first build step must be the README's setup")
        self.assertEqual(runs[1:], ["bash deploy/docker/collect-libs.sh build/lipsync build/image-lib"])
        # Only the documented build steps: no other instruction changes the build.
        self.assertEqual([ins for ins, _ in build], ["WORKDIR", "COPY", "RUN", "RUN"], dockerfile)
        self.assertIn(("COPY", ". ."), build, dockerfile)

        # The variables the setup command sets are options scripts/setup.sh reads.
        setup = read("scripts/setup.sh")
        for assignment in re.findall(r"\b([A-Z_][A-Z0-9_]*)=\S+", setup_command):
            self.assertRegex(setup, r"\$\{?" + assignment + r"\b",
                             f"scripts/setup.sh does not read {assignment}")

        # The runtime stage copies ONNX Runtime (core and, for CUDA, the providers) from
        # where scripts/setup.sh installs it.
        self.assertIn('ORT_DIR="$ROOT/third_party/onnxruntime"', setup)
        self.assertRegex(setup, r'"\$ORT_DIR/lib/\$f"', "CUDA providers not installed beside the core")

        for ins, arg in runtime:
            if ins == "RUN":
                for word in ("setup.sh", "cmake", "make ", "g++", "npm "):
                    self.assertNotIn(word, arg, f"{dockerfile}: runtime stage builds: `{arg}`")
            if ins == "COPY":
                self.assertTrue(arg.startswith("--from=build "),
                                f"{dockerfile}: runtime COPY not from the build stage: `{arg}`")
                source = arg.split()[1]
                self.assertTrue(source.startswith("/opt/lipsync/"), arg)
        copied = {arg.split()[1].rstrip("/") for ins, arg in runtime if ins == "COPY"}
        self.assertEqual(copied, {"/opt/lipsync/build/lipsync", "/opt/lipsync/build/image-lib",
                                  "/opt/lipsync/third_party/onnxruntime", "/opt/lipsync/web"})
        env = " ".join(arg for ins, arg in runtime if ins == "ENV")
        self.assertIn("LD_LIBRARY_PATH=/opt/lipsync/lib", env)
        self.assertIn(("ENTRYPOINT", '["/opt/lipsync/build/lipsync"]'), runtime)
        self.assertIn(("USER", "10001"), runtime)

    def test_cpu_image(self):
        self.check_image("deploy/docker/Dockerfile", "bash scripts/setup.sh", r"^debian:12-slim$")

    def test_cuda_image(self):
        self.check_image("deploy/docker/Dockerfile.cuda", "LIPSYNC_CUDA=1 bash scripts/setup.sh",
                         r"^nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu24\.04$")

    def test_build_stage_outputs_exist_in_a_built_tree(self):
        # What the runtime stage copies, as the README's commands leave it.
        self.assertTrue(os.access(os.path.join(BUILD, "lipsync"), os.X_OK))
        self.assertTrue(os.path.isfile(os.path.join(SOURCE, "third_party/onnxruntime/lib/libonnxruntime.so.1")))
        self.assertTrue(os.path.isfile(os.path.join(SOURCE, "web/index.html")))

    def test_collect_libs_bundles_everything_but_the_c_runtime(self):
        binary = os.path.join(BUILD, "lipsync")
        with tempfile.TemporaryDirectory() as dest:
            subprocess.run(["bash", os.path.join(SOURCE, "deploy/docker/collect-libs.sh"), binary, dest],
                           check=True, stdout=subprocess.DEVNULL)
            env = dict(os.environ, LD_LIBRARY_PATH=dest)
            ldd = subprocess.run(["ldd", binary], env=env, check=True, capture_output=True,
                                 text=True).stdout
            c_runtime = re.compile(r"^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|libpthread\.|"
                                   r"librt\.|libstdc\+\+\.|libgcc_s\.)")
            resolved = 0
            for line in ldd.splitlines():
                parts = line.split()
                if not parts or c_runtime.match(parts[0]) or "=>" not in parts:
                    continue
                self.assertNotIn("not found", line)
                self.assertTrue(parts[2].startswith(dest + "/"),
                                f"{parts[0]} resolves outside the bundle: {line.strip()}")
                resolved += 1
            self.assertGreater(resolved, 10)
            # The bundle runs: the binary starts with only the copied libraries.
            help_out = subprocess.run([binary, "--help"], env=env, capture_output=True, text=True)
            self.assertIn("inference", help_out.stdout + help_out.stderr)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
