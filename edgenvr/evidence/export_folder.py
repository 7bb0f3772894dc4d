"""The export folder's names and manifest format: what evidence.bundle writes and what evidence.verification,
the hub's intake and its clip store read. Kept apart from the code that builds an export so that reading or
checking one (`edgenvr verify` on a police laptop, the hub's workers) never loads the video stack.

Invariant: a name or the format changes only with a new MANIFEST_FORMAT, which every reader checks.
"""

from __future__ import annotations

MANIFEST_FORMAT = "edgenvr-export/1"
MANIFEST = "manifest.json"       # what the files are, where they come from, who exported them and why
SIGNATURE = "manifest.sig"       # the box's Ed25519 signature over the manifest's exact bytes
PUBLIC_KEY = "device.pub"        # the key that signed it (to be checked against the one given out of band)
SUMS = "SHA256SUMS"              # every other file's SHA-256, as `sha256sum -c` reads it
README = "VERIFY.txt"            # how to check it all by hand, in Indonesian and English
