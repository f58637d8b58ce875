"""Credentials: vendor token formats, private keys, JWTs, passwords in assignments, URLs,
connection strings and auth headers, plus high-entropy values.

Three kinds of rule, strongest first:
1. **Vendor formats** with a fixed prefix or structure (AWS `AKIA…`, GitHub `ghp_…`, Slack
   `xoxb-…`, Stripe `sk_live_…`, `-----BEGIN … PRIVATE KEY-----`, JWTs...): the format alone is
   evidence, as in gitleaks and detect-secrets.
2. **Keyword assignments**: a value after `password=`, `token:`, `api_key =>`, `IDENTIFIED BY`,
   `Authorization: Bearer`, `scheme://user:PASS@host`... counts when it looks like a secret
   (not a placeholder such as `<password>`, `${VAR}`, `****`, or an ordinary lower-case word).
3. **Encoded key material** without a keyword: base64 runs of PEM-body width with high entropy.

Offsets cover the secret value only (not the keyword), so redaction keeps `password=` readable.
Values that say they are examples (`EXAMPLE`, `xxxx`, `<...>`) are not reported, as secret
scanners do: they cannot be live credentials. Redaction asks for documented examples too
(`include_examples=True`: AWS's `AKIAIOSFODNN7EXAMPLE`), because removing one costs nothing and a
reader cannot tell a documented example from a real key that happens to say EXAMPLE.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter
from dataclasses import dataclass

from rag_pipeline.lib.safety.findings import Finding


@dataclass(frozen=True)
class _Rule:
    name: str
    type: str
    pattern: re.Pattern[str]
    group: int | str = 0
    score: float = 0.95


def _rule(name: str, type_: str, pattern: str, group: int | str = 0, score: float = 0.95) -> _Rule:
    return _Rule(name, type_, re.compile(pattern), group, score)


# Token start: not inside a longer token, except right after an ANSI colour code (`\x1b[94m`).
_B = r"(?:(?<=\x1b\[\dm)|(?<=\x1b\[\d\dm)|(?<![A-Za-z0-9_/+.-]))"
_E = r"(?![A-Za-z0-9_])"  # token end boundary

VENDOR_RULES: tuple[_Rule, ...] = (
    _rule(
        "private_key_block",
        "SECRET_PRIVATE_KEY",
        r"-----BEGIN[A-Z0-9 ]{0,30} PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[\s\S]{0,10000}?-----END[A-Z0-9 ]{0,30} PRIVATE KEY(?: BLOCK)?-----)?",
    ),
    _rule(
        "private_key_end",
        "SECRET_PRIVATE_KEY",
        r"-----END[A-Z0-9 ]{0,30} PRIVATE KEY(?: BLOCK)?-----",
        score=0.9,
    ),
    _rule("putty_key", "SECRET_PRIVATE_KEY", r"PuTTY-User-Key-File-\d: .*"),
    _rule("age_key", "SECRET_PRIVATE_KEY", _B + r"AGE-SECRET-KEY-1[0-9A-Z]{58}" + _E),
    _rule(
        "aws_access_key_id",
        "SECRET_AWS_ACCESS_KEY_ID",
        r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA|A3T[A-Z0-9])"
        r"[A-Z0-9]{16}(?![A-Za-z0-9])",
    ),
    _rule("aws_bedrock_key", "SECRET_AWS_KEY", _B + r"ABSK[A-Za-z0-9+/]{100,}={0,2}"),
    _rule("aws_bedrock_short", "SECRET_AWS_KEY", _B + r"bedrock-api-key-[A-Za-z0-9+/=_-]{20,}"),
    _rule(
        "aws_mws", "SECRET_AWS_KEY", _B + r"amzn\.mws\.[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}"
    ),
    _rule("aws_appsync", "SECRET_AWS_KEY", _B + r"da2-[a-z0-9]{26}" + _E),
    _rule(
        "github_token",
        "SECRET_GITHUB_TOKEN",
        _B + r"(?:gh[pousr]_[A-Za-z0-9_.-]{30,255}|github_pat_[A-Za-z0-9_]{40,255})" + _E,
    ),
    _rule(
        "gitlab_token",
        "SECRET_GITLAB_TOKEN",
        _B + r"(?:gl(?:pat|dt|rt|rtr|cbt|ptt|ft|imt|oas|soat|ffct|agent|wt|cr)-"
        r"[A-Za-z0-9_.-]{20,}|GR1348941[A-Za-z0-9_-]{20,})",
    ),
    _rule(
        "slack_webhook",
        "SECRET_SLACK_WEBHOOK",
        r"https?://hooks\.slack\.com/((?:services|workflows|triggers)/[A-Za-z0-9_/+-]{20,})",
        group=1,
    ),
    _rule(
        "slack_token",
        "SECRET_SLACK_TOKEN",
        _B + r"(?:xox[abposre]-[A-Za-z0-9-]{10,}|xapp-\d-[A-Za-z0-9-]{20,})",
    ),
    _rule(
        "stripe_key",
        "SECRET_STRIPE_KEY",
        _B + r"(?:[spr]k_(?:live|test|prod)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9]{24,})" + _E,
    ),
    _rule(
        "anthropic_key",
        "SECRET_ANTHROPIC_KEY",
        _B + r"sk-ant-(?:api|admin|sid)\d{2}-[A-Za-z0-9_-]{32,}",
    ),
    _rule(
        "openai_key",
        "SECRET_OPENAI_KEY",
        _B + r"sk-(?!ant-)(?:(?:proj|svcacct|admin|None)-)?[A-Za-z0-9_-]{20,}T3BlbkFJ"
        r"[A-Za-z0-9_-]{16,}",
    ),
    _rule(
        "openai_key_legacy",
        "SECRET_OPENAI_KEY",
        _B + r"sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{40,}" + _E,
        score=0.8,
    ),
    _rule("google_api_key", "SECRET_GOOGLE_API_KEY", _B + r"AIza[0-9A-Za-z_-]{35}" + _E),
    _rule(
        "google_oauth_client",
        "SECRET_GOOGLE_OAUTH",
        r"(?<![\w-])\d{6,}-[a-z0-9]{32}\.apps\.googleusercontent\.com",
    ),
    _rule("google_oauth_secret", "SECRET_GOOGLE_OAUTH", _B + r"GOCSPX-[A-Za-z0-9_-]{28}" + _E),
    _rule("google_oauth_access", "SECRET_GOOGLE_OAUTH", _B + r"ya29\.[A-Za-z0-9_-]{20,}"),
    _rule("google_oauth_refresh", "SECRET_GOOGLE_OAUTH", _B + r"1//0[A-Za-z0-9_-]{40,}"),
    _rule(
        "azure_client_secret",
        "SECRET_AZURE",
        r"(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}(?![A-Za-z0-9_~.-])",
    ),
    _rule(
        "azure_key_marker",
        "SECRET_AZURE",
        _B + r"[A-Za-z0-9+/]{40,}JQQJ99[A-Za-z0-9+/]{5,}AZ[A-Za-z0-9+/]{4,}={0,2}",
    ),
    _rule(
        "azure_storage_key", "SECRET_AZURE", r"(?i)AccountKey=([A-Za-z0-9+/]{80,}={0,2})", group=1
    ),
    _rule(
        "jwt", "SECRET_JWT", _B + r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    ),
    _rule(
        "jwt_header_payload",
        "SECRET_JWT",
        _B + r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}(?![.A-Za-z0-9_-])",
        score=0.8,
    ),
    _rule("twilio", "SECRET_API_KEY", r"(?<![A-Za-z0-9])(?:AC|SK)[0-9a-f]{32}(?![A-Za-z0-9])"),
    _rule("alibaba_access_key", "SECRET_API_KEY", r"(?<![A-Za-z0-9])LTAI[A-Za-z0-9]{12,20}" + _E),
    _rule("salesforce", "SECRET_API_KEY", _B + r"00D[A-Za-z0-9]{12,15}![A-Za-z0-9._]{20,}"),
    _rule("dropbox", "SECRET_API_KEY", _B + r"sl\.[A-Za-z0-9_-]{60,}"),
    _rule(
        "vendor_prefix",
        "SECRET_API_KEY",
        _B + r"(?:glsa_[A-Za-z0-9_]{30,}|glc_[A-Za-z0-9+/=_-]{30,}|phc_[A-Za-z0-9]{30,}|"
        r"phx_[A-Za-z0-9]{30,}|sbp_[a-f0-9]{40}|PMAK-[a-f0-9]{24}-[a-f0-9]{34}|"
        r"tvly-(?:dev-)?[A-Za-z0-9]{24,}|xkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}|"
        r"xsmtpsib-[a-f0-9]{64}-[A-Za-z0-9]{16}|sq0(?:csp|atp)-[A-Za-z0-9_-]{22,}|"
        r"EAAA[A-Za-z0-9_-]{60}|HRKU-[A-Za-z0-9_-]{30,}|pscale_(?:tkn|pw|oauth)_[A-Za-z0-9_.=-]{32,}|"
        r"dckr_pat_[A-Za-z0-9_-]{27,}|npm_[A-Za-z0-9]{36}|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}|"
        r"lin_api_[A-Za-z0-9]{40}|nfp_[A-Za-z0-9_]{36,}|vcp_[A-Za-z0-9]{40,}|ntn_[A-Za-z0-9]{40,}|"
        r"dapi[a-f0-9]{32}(?:-\d)?|SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}|"
        r"shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}|hf_[A-Za-z0-9]{34,}|"
        r"AT(?:ATT|CTT)3[A-Za-z0-9_=+/-]{100,}|NR(?:II|AK|AA|JS|RA)-[A-Za-z0-9_-]{20,}|"
        r"CLOJARS_[a-z0-9]{60}|SWMTKN-1-[A-Za-z0-9-]{40,}|SWMKEY-1-[A-Za-z0-9]{30,}|"
        r"cmVmdGtu[A-Za-z0-9+/]{40,}={0,2}|AKCp[A-Za-z0-9]{69,}|"
        r"r8_[A-Za-z0-9]{37}|gsk_[A-Za-z0-9]{48,}|xai-[A-Za-z0-9]{70,}|pat[A-Za-z0-9]{14}\."
        r"[a-f0-9]{64}|doo_v1_[a-f0-9]{64}|dop_v1_[a-f0-9]{64}|rubygems_[a-f0-9]{48}|"
        r"figd_[A-Za-z0-9_-]{40,}|ops_eyJ[A-Za-z0-9+/=_-]{100,}|key-[a-f0-9]{32}|"
        r"SK[0-9a-fA-F]{32}|sntrys_eyJ[A-Za-z0-9+/=_-]{50,}|sntryu_[a-f0-9]{64}|"
        r"tfp_[A-Za-z0-9_-]{40,}|atlasv1\.[A-Za-z0-9_=-]{60,})" + _E,
    ),
)

# --- keyword assignments -----------------------------------------------------------------------
# Keyword -> reported type. Order matters: the first alternative that matches names the type.
_KEYWORD_TYPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"(?i)pass(?:word|wd|phrase)?|pwd|\bpw\b|kennwort|passwort|contraseña|"
            r"mot_?de_?passe"
        ),
        "SECRET_PASSWORD",
    ),
    (re.compile(r"(?i)aws.?secret|secret.?access.?key"), "SECRET_AWS_SECRET_ACCESS_KEY"),
    (re.compile(r"(?i)api.?key|apikey|app.?key|x-api-key"), "SECRET_API_KEY"),
    (re.compile(r"(?i)token|bearer"), "SECRET_TOKEN"),
    (re.compile(r"(?i)secret|credential|cred\b|auth|signature|cookie|session"), "SECRET_GENERIC"),
    (re.compile(r"(?i)key"), "SECRET_KEY"),
)
# An identifier (the assignment's left side). Whether it names a secret is checked in Python
# (`_SECRET_NAME`); the look-ahead only pre-selects identifiers, and only at a token start
# (an unanchored keyword search inside the regex, tried at every offset, was quadratic).
_KEYWORD = (
    r"(?<![A-Za-z0-9_.-])(?=[A-Za-z0-9_.-]{0,48}?(?i:pass|pwd|pw|secret|token|key|auth|cred|"
    r"signature|bearer|session|cookie|kennwort|passwort))[A-Za-z0-9_.-]{1,64}"
)
# Each keyword must end the word (`(?![a-zA-Z])`): `passed`, `tokenizer`, `author`, `keyboard`,
# `secretary` and `passwordHash` name no secret.
_SECRET_NAME = re.compile(
    r"(?i)(?:(?<!by)(?<!com)pass(?:words?|wd|phrase)?|pwd|(?:^|[_.-])pw|secrets?|tokens?|"
    r"api[_.-]?key|apikey|access[_.-]?key|private[_.-]?key|credentials?|(?:^|[_.-])cred|"
    r"auth(?:orization|entication|_?token|_?key)?|signature|bearer|session[_.-]?(?:id|key|token)|"
    r"cookie|keys?|passwort|kennwort)(?![a-zA-Z])"
)
# keyword, optional closing quote, an assignment operator, optional opening quote, the value.
_ASSIGNMENT = re.compile(
    r"(?i)(?P<key>" + _KEYWORD + r")[\"'`\]]?\s*(?:[:=]{1,2}|=>|->|\s(?:is|=)\s|:=|%3D)\s*"
    r"(?:\(\s*|\[\s*|\{\s*)?(?:[bru]?)(?P<q>\"|'|`|'''|&quot;|\\\")?"
    # Not a path (`/...`) and not the next `name:` / `name=` of a chain (`Token-> Name: value`).
    r"(?P<value>(?![/:]|[A-Za-z_.-]+[:=](?:\s|$))[^\s\"'`,;)\]}<>&]{4,512}|'''[^']{4,512})"
)
# keyword then whitespace then value, only for command-line flags and preprocessor defines:
# `--token X`, `%define token X`, `#define PASSWORD X`, `PASSWORD 'X'`, `IDENTIFIED BY 'X'`.
_SPACED = re.compile(
    r"(?i)(?:(?:--|-)(?P<flag>[a-z-]*(?:token|password|passwd|secret|key|pass|pwd))[ =]"
    r"|(?:%define|%global|#define|set|export)\s+(?P<define>[A-Za-z0-9_]*(?:token|password|passwd|"
    r"secret|key|pwd)[A-Za-z0-9_]*)\s+"
    r"|(?P<sql>identified\s+(?:with\s+\w+\s+)?by|password|ConvertTo-SecureString)\s+)"
    r"(?P<q>\"|'|\\\")?(?P<value>[^\s\"'`,;)<>]{4,512})"
)
_URL_CREDENTIALS = re.compile(
    r"(?i)\b[a-z][a-z0-9+.-]{1,20}://(?P<user>[^:/\s@\"']{1,64}):(?P<value>[^@/\s\"']{3,128})@"
    r"[^\s/\"']+"
)
_AUTH_HEADER = re.compile(
    r"(?i)\b(?:authorization|proxy-authorization|x-auth-token|x-api-key)\b[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|basic|token|ntlm|negotiate|digest|apikey)\s+)?"
    r"(?P<value>(?![/]|[A-Za-z_]+=)[A-Za-z0-9+/=._~%-]{8,})"
)
_OAUTH_BEARER = re.compile(r"(?i)--oauth2-bearer\s+[\"']?(?P<value>[A-Za-z0-9+/=._~-]{8,})")
_DB_CONNECTION = re.compile(
    r"(?i)(?:^|;|\s)(?:password|pwd)\s*=\s*(?P<value>[^;\s\"']{3,128})\s*(?:;|$)"
)
# A line of PEM/DER key material: 60-120 base64 characters standing alone on a line (after a
# log prefix or an opening quote), as in a key pasted into code, a log or a config file.
_KEY_MATERIAL_LINE = re.compile(
    r"(?m)(?:^|[\s\"'])(?P<value>[A-Za-z0-9+/]{60,120}={0,2})(?=\s*(?:\\\\|\\n|\\|\"|'|$))"
)
# Public material whose base64 body looks like key material: certificates, public keys,
# signatures.
_PUBLIC_BLOCK = re.compile(
    r"-----BEGIN (?:CERTIFICATE|PUBLIC KEY|RSA PUBLIC KEY|PGP PUBLIC KEY BLOCK|PGP SIGNATURE|"
    r"X509 CRL|CERTIFICATE REQUEST|NEW CERTIFICATE REQUEST|SSH2 PUBLIC KEY)-----[\s\S]{0,20000}?"
    r"(?:-----END [A-Z0-9 ]+-----|$)"
)
# `/token/VALUE` in a URL path.
_PATH_SECRET = re.compile(
    r"(?i)/(?:token|tokens|key|apikey|api_key|secret|access_token)/(?P<value>[A-Za-z0-9_=-]{16,})"
)
# A key written as a byte array: `AESKEY {0x35, 0x34, ...}`, `Secret: []byte{333, 9, ...}`.
_BYTE_ARRAY = re.compile(
    r"(?i)(?:key|secret|token|password|passwd|iv|nonce)\w*\b[^\n]{0,20}?[{\[]\s*"
    r"(?P<value>(?:0x[0-9a-f]{1,2}|\d{1,3})(?:\s*,\s*(?:0x[0-9a-f]{1,2}|\d{1,3})){7,})"
)
# A secret-named variable whose default comes from a literal: `SECRET = getenv("X", "value")`.
_ENV_DEFAULT = re.compile(
    r"(?i)(?P<key>" + _KEYWORD + r")\s*(?::=|=)\s*(?:os\.)?(?:getenv|environ\.get)\(\s*"
    r"[\"'][^\"']*[\"']\s*,\s*[\"'](?P<value>[^\"']{4,256})[\"']"
)
# Alibaba Cloud: an `LTAI` AccessKey id followed by its 30-character AccessKey secret.
_ALIBABA_PAIR = re.compile(
    r"LTAI[A-Za-z0-9]{12,20}[\"',;:\s]{1,6}(?P<value>[A-Za-z0-9]{30})(?![A-Za-z0-9])"
)

_PLACEHOLDER = re.compile(
    r"(?i)^(?:\$\{?[\w.]+\}?|%\(?\w+\)?s?|\{\{?[^}]*\}?\}|<[^>]*>?|\*+.*|x{4,}|\.{3,}|"
    r"(?:your|my|the|some|enter|insert|replace|change)[_-]?.*|none|null|nil|true|false|"
    r"undefined|string|str|int|bool|password|passwd|secret|token|value|example|sample|dummy|"
    r"test|changeme|redacted|hidden|masked|required|optional|env|getenv.*|os\.environ.*|"
    r"process\.env.*|self\..*|this\..*|config\..*|settings\..*|args?\..*|params?\..*)$"
)


def shannon_entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


_SEQUENCES = ("0123456789", "abcdefghijklmnopqrstuvwxyz")


def _has_counting_run(value: str, length: int = 6) -> bool:
    """`123456`, `abcdef`: typed by a person writing a dummy, vanishingly rare in random keys."""
    lowered = value.lower()
    return any(
        sequence[i : i + length] in lowered
        for sequence in _SEQUENCES
        for i in range(len(sequence) - length + 1)
    )


def _is_example(value: str, *, include_examples: bool = False) -> bool:
    lowered = value.lower()
    return (
        (not include_examples and "example" in lowered)
        or "xxxxx" in lowered
        or "*****" in value
        or "<" in value
        or _has_counting_run(value)
    )


_CODE_EXPRESSION = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\s*[(\[]"
    r"|^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\.[a-z_]+$"
    r"|^[a-z_]+\.[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$"
)


def _is_name_like(value: str) -> bool:
    """Lower-case words joined by punctuation, maybe with a short number: a name, not a key."""
    chunks = [chunk for chunk in re.split(r"[^A-Za-z0-9]+", value) if chunk]
    words = [chunk for chunk in chunks if re.fullmatch(r"[a-z]{3,}", chunk)]
    others = [chunk for chunk in chunks if chunk not in words]
    return (
        len(chunks) >= 2
        and len(words) >= 2
        and all(re.fullmatch(r"[a-z]{1,2}|v?\d{1,4}", chunk) for chunk in others)
    )


def looks_like_secret(
    value: str, *, password: bool = False, include_examples: bool = False
) -> bool:
    """A value that a person or a program chose to be hard to guess, not a word, a placeholder,
    a variable name or a reference (`${VAR}`, `<password>`, `os.environ[...]`, `user.name`)."""
    if _PLACEHOLDER.match(value) or _is_example(value, include_examples=include_examples):
        return False
    minimum = 6 if password else 8
    if len(value) < minimum:
        return False
    has_digit = any(c.isdigit() for c in value)
    has_upper = any(c.isupper() for c in value)
    has_lower = any(c.islower() for c in value)
    has_symbol = any(not c.isalnum() for c in value)
    classes = has_digit + has_upper + has_lower + has_symbol
    if value.isdigit():
        return len(value) >= 12 and len(set(value)) >= 6
    if re.fullmatch(r"[a-z]+(?:[_.-][a-z]+)*", value):
        return False  # identifiers and words: `my_secret`, `environment`, `user.password`
    if re.fullmatch(r"[A-Z][a-z]+|[A-Z_]+", value):
        return False  # a Word or an ENV_VAR_NAME
    if _CODE_EXPRESSION.match(value) or value.endswith("()"):
        return False  # a call, an index or an attribute path: `conn.execute(`, `EXCLUDED.key`
    if re.fullmatch(r"(?:[A-Z][a-z]+){2,}\d?", value):
        return False  # a CamelCase name: `IndexKeys`, `DemoToken`
    if re.fullmatch(r"[A-Za-z]+(?:[-_. /][A-Za-z]+)+", value):
        return False  # words joined without a digit: `WWW-Authenticate`, `dagster/backfill`
    if _is_name_like(value):
        return False  # lower-case words with a version: `fake-model@v1`, `policies:guide.md`
    if password:
        return classes >= 2
    return classes >= 2 and shannon_entropy(value) >= 2.8


def _keyword_type(keyword: str) -> str:
    for pattern, type_ in _KEYWORD_TYPES:
        if pattern.search(keyword):
            return type_
    return "SECRET_GENERIC"


def _strip_value(value: str) -> str:
    value = value.strip().split("%26", 1)[0]  # URL-encoded `&`: the next parameter
    value = value.rstrip(":,")  # `{key.name: value}`: the next key, not this value
    for suffix in ("&quot", "\\", "&amp"):
        if value.endswith(suffix) and len(value) > len(suffix):
            value = value[: -len(suffix)]
    return value.rstrip(".")


def _base64_is_prose(value: str) -> bool:
    """Base64 that decodes to words and spaces is an encoded sentence, not key material."""
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=False)
    except (binascii.Error, ValueError):
        return False
    text = decoded.decode("latin-1")
    printable = sum(c.isprintable() for c in text) / max(1, len(text))
    return printable > 0.95 and text.count(" ") >= 3


def find_secrets(text: str, *, include_examples: bool = False) -> list[Finding]:
    """Every credential candidate (may overlap; the caller keeps the strongest).

    `include_examples` also reports values that say they are examples (see the module doc).
    """
    findings: list[Finding] = []
    for rule in VENDOR_RULES:
        for match in rule.pattern.finditer(text):
            value = match.group(rule.group)
            if _is_example(value, include_examples=include_examples) and rule.name not in (
                "private_key_block",
                "private_key_end",
            ):
                continue
            if value.startswith("cmVmdGtu") and _base64_is_prose(value):
                continue
            start, end = match.span(rule.group)
            findings.append(Finding(rule.type, start, end, f"secrets:{rule.name}", rule.score))

    def add(match: re.Match[str], type_: str, name: str, score: float, password: bool) -> None:
        value = _strip_value(match.group("value"))
        start = match.start("value")
        if value.startswith("'''"):
            value = value[3:]
            start += 3
        quote = match.groupdict().get("q")
        if quote in ('"', "'", "`"):
            # A quoted literal runs to its closing quote: `"Tr0ub4dor&3x!"` keeps its `&`.
            close = text.find(quote, start, start + 512)
            line_end = text.find("\n", start)
            if close > start and (line_end == -1 or close < line_end):
                value = text[start:close]
        if looks_like_secret(value, password=password, include_examples=include_examples):
            findings.append(Finding(type_, start, start + len(value), f"secrets:{name}", score))

    for match in _ASSIGNMENT.finditer(text):
        key = match.group("key")
        if not _SECRET_NAME.search(key):
            continue
        type_ = _keyword_type(key)
        add(match, type_, "assignment", 0.85, type_ == "SECRET_PASSWORD")
    for match in _SPACED.finditer(text):
        keyword = match.group("flag") or match.group("define") or match.group("sql")
        type_ = _keyword_type(keyword)
        if match.group("sql") and match.group("sql").lower() != "password":
            type_ = "SECRET_PASSWORD"
        if match.group("sql") and not match.group("q"):
            continue  # `password reset`, `IDENTIFIED BY` without a quoted literal
        add(match, type_, "keyword", 0.8, type_ == "SECRET_PASSWORD")
    for match in _URL_CREDENTIALS.finditer(text):
        add(match, "SECRET_URL_CREDENTIALS", "url_credentials", 0.9, True)
    for match in _AUTH_HEADER.finditer(text):
        add(match, "SECRET_AUTH_HEADER", "auth_header", 0.9, False)
    for match in _OAUTH_BEARER.finditer(text):
        add(match, "SECRET_TOKEN", "bearer_flag", 0.9, False)
    for match in _DB_CONNECTION.finditer(text):
        add(match, "SECRET_DB_CONNECTION_STRING", "connection_string", 0.9, True)
    for match in _PATH_SECRET.finditer(text):
        add(match, "SECRET_TOKEN", "url_path", 0.8, False)
    for match in _ENV_DEFAULT.finditer(text):
        if not _SECRET_NAME.search(match.group("key")):
            continue
        add(match, _keyword_type(match.group("key")), "env_default", 0.85, False)
    for match in _ALIBABA_PAIR.finditer(text):
        findings.append(
            Finding("SECRET_API_KEY", *match.span("value"), "secrets:alibaba_secret", 0.9)
        )
    for match in _BYTE_ARRAY.finditer(text):
        findings.append(Finding("SECRET_KEY", *match.span("value"), "secrets:byte_array", 0.8))
    public = [block.span() for block in _PUBLIC_BLOCK.finditer(text)]
    for match in _KEY_MATERIAL_LINE.finditer(text):
        value = match.group("value")
        if any(start <= match.start("value") < end for start, end in public):
            continue  # a certificate or public key body is base64 too, and public
        if (
            any(c.isupper() for c in value)
            and any(c.islower() for c in value)
            and shannon_entropy(value) >= 4.5
            and not value.startswith("iVBOR")
            and not _base64_is_prose(value)
        ):
            findings.append(
                Finding(
                    "SECRET_PRIVATE_KEY",
                    match.start("value"),
                    match.end("value"),
                    "secrets:key_material",
                    0.7,
                )
            )
    return findings
