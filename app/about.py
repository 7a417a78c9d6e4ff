"""Help > About: what the app is, research-use notice and the licences of the bundled demo data."""

from __future__ import annotations

import html

from core.kinds.classification.demo import MNI_NOTICE

CITATION = ("Zhou et al., Low-Rank Knowledge Decomposition for Medical Foundation Models, CVPR 2024 "
            "(arXiv 2404.17184); Li et al., arXiv 2409.19540")


def version() -> str:
    try:
        from importlib.metadata import version as package_version

        return package_version("lorkd-studio")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "dev"


def about_html() -> str:
    """The About box text (rich text)."""
    notices = [
        ("MNI ICBM152 2009a brain template (demo tasks plane, level, tissue, modality; shipped by nilearn)",
         MNI_NOTICE),
        ("CT_small.dcm (demo modality task; shipped by pydicom)", "pydicom test data, MIT licence."),
        ("Fundus photograph (demo modality task; scikit-image data.retina)",
         "Mikael Häggström, Wikimedia Commons, CC0 1.0 public domain dedication."),
        ("Immunohistochemistry image (demo modality task; scikit-image data.immunohistochemistry)",
         "Center for Microscopy And Molecular Imaging (CMMI); no known copyright restrictions."),
    ]
    items = "".join(f"<li><b>{html.escape(title)}</b><br>{html.escape(text)}</li>" for title, text in notices)
    return (
        f"<h3>LoRKD Studio {html.escape(version())}</h3>"
        "<p>Decomposes a medical foundation model into lightweight per-task expert models with Low-Rank "
        f"Knowledge Decomposition ({html.escape(CITATION)}).</p>"
        "<p><b>Research use only. Not a medical device; not for diagnosis or treatment.</b></p>"
        "<p>Licence: Apache-2.0.</p>"
        f"<p>Data of the embedded demo:</p><ul>{items}</ul>"
    )
