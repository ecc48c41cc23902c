"""What the layer's scripts share about openembedded-core's licence QA."""

import hashlib


def lic_md5(path, begin=0, end=0):
    """md5 of `path` as oe-core's license QA computes it for
    LIC_FILES_CHKSUM: the whole file, or lines `begin` to `end` (1-based,
    inclusive; 0 leaves that side open)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        if not begin and not end:
            digest.update(f.read())
            return digest.hexdigest()
        for number, line in enumerate(f, 1):
            if number < begin:
                continue
            if end and number > end:
                break
            digest.update(line)
    return digest.hexdigest()
