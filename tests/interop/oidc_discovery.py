"""Validates a discovery document with Authlib, an independent OAuth/OIDC implementation.

Reads {"document": {...}, "issuer": "..."} on stdin; prints {"ok": true} or {"ok": false,
"error": "..."}. Both Authlib validators run: RFC 8414 authorization server metadata and
OpenID Connect Discovery 1.0 provider metadata.
"""

import json
import sys

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata


def main():
    request = json.load(sys.stdin)
    document = request["document"]
    try:
        AuthorizationServerMetadata(document).validate()
        OpenIDProviderMetadata(document).validate()
        if document["issuer"] != request["issuer"]:
            raise ValueError("issuer differs from the one the document was fetched for")
        print(json.dumps({"ok": True}))
    except ValueError as error:
        print(json.dumps({"ok": False, "error": str(error)}))


if __name__ == "__main__":
    main()
