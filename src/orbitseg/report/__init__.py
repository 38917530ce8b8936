"""What a person looks at: the HTML report of a training run and the pictures of scans and labels.

``html``: :func:`write_report` (``orbitseg report RUN_DIR``); ``pictures``: axial / coronal /
sagittal views with labels overlaid (``orbitseg show``) and training curves.
"""

from orbitseg.report.html import write_report

__all__ = ["write_report"]
