"""Mammographic views: the terms, the CC family, and the view a file name states.

Terms are DICOM View Position (0018,5101) values for mammography (PS3.3 C.8.11.7 and PS3.16
CID 4014 "View for Mammography"): CC cranio-caudal, MLO medio-lateral oblique, ML / LM
medio-lateral / latero-medial, LMO latero-medial oblique, XCCL / XCCM exaggerated CC (lateral /
medial), FB caudo-cranial (from below), SIO / ISO superolateral-inferomedial oblique and back,
CV cleavage, AT axillary tail; SPOT and MAG mark spot-compression and magnification views.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Union

#: View Position terms a DICOM file may carry (see the module docstring).
VIEW_TERMS = frozenset({"CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "FB", "SIO", "ISO", "CV", "AT",
                        "SPOT", "MAG"})

#: Views taken along the cranio-caudal axis: the pectoral muscle lies behind the image's chest-wall
#: edge, so a pectoral label there is dense breast tissue misread (see ``runtime.crop.CropRule``).
CC_VIEWS = frozenset({"CC", "XCCL", "XCCM", "FB", "CV"})

#: Views a file name may state: the common screening and diagnostic views only, since short terms
#: such as 'AT' or 'CV' are ordinary words and initials in file names.
_NAME_VIEWS = frozenset({"CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM"})


def view_from_name(name: Union[str, Path]) -> Optional[str]:
    """The view a file name states, e.g. 'P102_R_DM_CC.png' -> 'CC', 'A_0040_1.RIGHT_MLO.png' ->
    'MLO', 'case7-LCC.tif' -> 'CC' (a laterality letter fused to the view), or None.

    The name (its last path component) is split at every character that is not a letter or digit;
    a token that is a view term of :data:`_NAME_VIEWS`, alone or after 'L' / 'R', states the view.
    None when no token does or when tokens state different views (ambiguous). An extension is one
    more token (no view term is an image extension), so a DICOM file named without one, such as
    'A_0040_1.RIGHT_MLO', keeps the view after its last dot.
    """
    found = set()
    for tok in re.split(r"[^A-Za-z0-9]+", Path(str(name)).name.upper()):
        if tok in _NAME_VIEWS:
            found.add(tok)
        elif len(tok) > 2 and tok[0] in "LR" and tok[1:] in _NAME_VIEWS:
            found.add(tok[1:])
    return found.pop() if len(found) == 1 else None


def is_cc_view(view: Optional[str]) -> bool:
    """True for a view of the CC family (:data:`CC_VIEWS`), case-insensitive; False for None."""
    return bool(view) and view.strip().upper() in CC_VIEWS
