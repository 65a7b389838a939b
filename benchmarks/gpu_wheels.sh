#!/usr/bin/env bash
# Here, before a device call: download, into .whl/ (ignored by git), the wheels of the packages this
# project needs that the lent GPU machines' image lacks (diffusers, pydantic, av; the image has torch,
# transformers, peft, accelerate, ...: .library/device/KINDS.md). Versions are the ones installed
# here, for the image's Python 3.12. About 45 MB; a device call carries them with carry=[".whl"].
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
pins=()
for name in diffusers pydantic pydantic_core annotated_types typing_inspection av; do
  pins+=("$name==$(python3 -m pip show "$name" | awk '/^Version:/{print $2}')")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${pins[@]}"
ls .whl
