"""Reorientation to one canonical anatomical orientation (a pure geometry change)."""

from __future__ import annotations

from orbitseg.io.volume import Volume

#: index axes i, j, k point to patient Left, Posterior, Superior (ITK's "LPS" code)
CANONICAL = "LPS"


def to_canonical(volume: Volume, orientation: str = CANONICAL) -> Volume:
    """Permute/flip the voxel axes so they point along ``orientation``.

    Only axis permutations and flips happen (no interpolation), so every voxel
    keeps its value and its physical position; an oblique grid keeps its small
    rotation, mapped to the closest canonical axes.  After this, ``array[k]`` is
    an axial slice seen from the feet with the patient's right on the left of
    the image (radiological convention) and anterior at the top.

    Parameters
    ----------
    volume : any volume
    orientation : ITK orientation code of the target (default ``"LPS"``)
    """
    import SimpleITK as sitk

    out = sitk.DICOMOrient(volume.to_sitk(), orientation)
    result = Volume.from_sitk(out, volume.path, **volume.meta)
    return result
