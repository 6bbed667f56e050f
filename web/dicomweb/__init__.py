"""DICOMweb under /dicomweb (PS3.18): QIDO-RS, WADO-RS, STOW-RS over the index of held
instances and the forwarder's intake, and the worklist and MPPS over REST.

Who may call: an API Bearer token or a signed-in session (``web._authenticate`` treats
/dicomweb like /api: anonymous gets 401, JSON errors). Each part is a nested blueprint:
``search`` (QIDO-RS), ``retrieve`` (WADO-RS), ``store`` (STOW-RS), ``worklist``.
"""

from __future__ import annotations

from flask import Blueprint, Response

from web.dicomweb import common, retrieve, search, store, worklist

bp = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")
for _part in (search, retrieve, store, worklist):
    bp.register_blueprint(_part.bp)


@bp.errorhandler(common.Refused)
def _refused(exc: common.Refused) -> Response:
    return common.problem(exc.code, exc.field, exc.message)
