"""The worklist and MPPS over REST (PS3.18 chapters 14 and 15)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("worklist", __name__)
