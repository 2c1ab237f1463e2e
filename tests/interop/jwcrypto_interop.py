"""The independent JOSE implementation the platform is checked against (Python jwcrypto).

Reads one JSON request on stdin, writes one JSON answer on stdout. Operations:
  verify   {"jwks": <JWK Set>, "token": <compact JWS>}            -> {"header", "claims"}
  sign     {"pem": <PKCS#8 PEM>, "alg", "kid", "claims"}           -> {"token"}
  decrypt  {"pem": <PKCS#8 PEM>, "token": <compact JWE>}           -> {"header", "plaintext"}
  encrypt  {"jwk": <public JWK>, "plaintext", "cty"?}              -> {"token"}
Any failure exits non-zero with the reason on stderr, so the calling test fails loudly.
"""

import json
import sys

from jwcrypto import jwe, jwk, jws


def verify(req):
    keys = jwk.JWKSet.from_json(json.dumps(req["jwks"]))
    token = jws.JWS()
    token.deserialize(req["token"])
    header = token.jose_header
    key = keys.get_key(header["kid"])
    if key is None:
        raise SystemExit(f"kid {header['kid']} not in the JWK Set")
    # The algorithm is the published key's, never the header's alone.
    if header["alg"] != key.get("alg"):
        raise SystemExit(f"header alg {header['alg']} differs from the key's {key.get('alg')}")
    token.verify(key, alg=key.get("alg"))
    return {"header": header, "claims": json.loads(token.payload)}


def sign(req):
    key = jwk.JWK.from_pem(req["pem"].encode())
    token = jws.JWS(json.dumps(req["claims"]).encode())
    token.add_signature(key, alg=req["alg"], protected={"alg": req["alg"], "kid": req["kid"], "typ": "at+jwt"})
    return {"token": token.serialize(compact=True)}


def decrypt(req):
    key = jwk.JWK.from_pem(req["pem"].encode())
    token = jwe.JWE()
    token.deserialize(req["token"], key=key)
    return {"header": token.jose_header, "plaintext": token.payload.decode()}


def encrypt(req):
    public = dict(req["jwk"])
    key = jwk.JWK(**{k: public[k] for k in ("kty", "crv", "x", "y", "n", "e", "kid") if k in public})
    header = {"alg": public["alg"], "enc": "A256GCM", "kid": public["kid"]}
    if req.get("cty"):
        header["cty"] = req["cty"]
    token = jwe.JWE(req["plaintext"].encode(), protected=header)
    token.add_recipient(key)
    return {"token": token.serialize(compact=True)}


def main():
    req = json.load(sys.stdin)
    answer = {"verify": verify, "sign": sign, "decrypt": decrypt, "encrypt": encrypt}[req["op"]](req)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
