"""Request parsing shared by the wire formats."""

from __future__ import annotations

from rest_framework.parsers import JSONParser


class AnyContentTypeJSONParser(JSONParser):
    """Reads the body as JSON whatever Content-Type says (curl -d sends form encoding)."""

    media_type = "*/*"
