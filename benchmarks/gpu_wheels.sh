#!/usr/bin/env bash
# Fetch, where pip reaches the registry, the wheels benchmarks/gpu_check.sh installs on a
# GPU machine without network (Python 3.12, x86-64, a CUDA torch already there).
# Pure-Python except zstandard.
set -e
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
mkdir -p .whl
# setuptools<81: ParlAI imports pkg_resources (the image's setuptools may be newer).
for spec in parlai==1.7.2 iopath==0.1.9 nltk coloredlogs humanfriendly zstandard submitit setuptools==80.10.2; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl "$spec"
done
ls .whl
