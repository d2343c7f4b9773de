"""Check a folder of photos, print the QC report, and prepare a training set.

Runs offline: it makes synthetic photos with the test kit. With your own photos use:

    ps = PhotoSet.from_folder("photos/me", subject_class="person")
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lensa_for_all import PhotoSet
from lensa_for_all.errors import TooFewPhotosError
from lensa_for_all.testing import make_photos


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "me"
        make_photos(folder, 6, size=(640, 800), seed=0)
        (folder / "notes.txt").write_text("not a photo")  # will be rejected, with a reason

        try:
            ps = PhotoSet.from_folder(folder, subject_class="person", min_photos=4)
        except TooFewPhotosError as exc:
            print(exc)
            return
        ps.report().print()
        for rejection in ps.rejected:
            print(f"rejected {rejection.path.name}: {rejection.reason}")

        out = ps.prepare(Path(tmp) / "run" / "photos", resolution=512)
        print(f"prepared {len(ps.photos)} photos:", sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
