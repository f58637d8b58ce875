"""Structured PII: patterns, each confirmed by a validation step before it counts.

A bare regular expression over digits flags every order number, build number and hash; so every
candidate here must also pass a check that real values pass and look-alikes mostly fail: Luhn for
card numbers, ISO 13616 mod-97 and the country's length for IBANs, the SSA's never-issued ranges
for SSNs, `ipaddress` for IP addresses, `phonenumbers` plus a phone word nearby for phone numbers.
Digits next to words that name another kind of number (ISBN, EAN, invoice, serial...) are skipped.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from rag_pipeline.lib.safety.findings import Finding

# Words before a digit string that say it is some other number (hard negatives).
_OTHER_NUMBER = re.compile(
    r"(?i)\b(?:isbn(?:-1[03])?|ean(?:-13)?|upc|gtin|issn|doi|serial(?:\s+no\.?|\s+number)?|s/n|"
    r"ticket|invoice|order|tracking|reference|ref\.?|part(?:\s+number)?|sku|build|version|"
    r"ver\.?|release|oid|sha\d*|md5|commit|batch|lot|model|po\b|case)\s*(?:no\.?|number|#|:)?"
    r"\s*[:#]?\s*$"
)


def _preceded_by_other_number(text: str, start: int) -> bool:
    return bool(_OTHER_NUMBER.search(text[max(0, start - 30) : start]))


# --- email -------------------------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)


def find_emails(text: str) -> Iterator[Finding]:
    for match in _EMAIL.finditer(text):
        local = match.group().split("@", 1)[0]
        if ".." in local or local.endswith("."):
            continue
        yield Finding("EMAIL_ADDRESS", match.start(), match.end(), "regex:email", 0.95)


# --- credit cards ------------------------------------------------------------------------------
# 12 to 19 digits, optionally in groups separated by one space or dash.
_CARD = re.compile(r"(?<![\w.,/-])\d(?:[ -]?\d){11,18}(?![\w/-]|[.,]\d)")
_CARD_WORDS = re.compile(
    r"(?i)\b(?:card|cc|credit|debit|visa|mastercard|amex|american express|discover|diners|jcb|"
    r"maestro|unionpay|karte|kreditkarte|carte|tarjeta|pan)\b"
)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum (ISO/IEC 7812) every payment card number carries."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card_brand_prefix(digits: str) -> bool:
    """Issuer prefixes of the card networks (IIN ranges), so a random Luhn-valid number without
    any card word around it must also start like a real card."""
    two, four = int(digits[:2]), int(digits[:4])
    six = int(digits[:6])
    length = len(digits)
    return (
        (digits[0] == "4" and length in (13, 16, 19))  # Visa
        or (51 <= two <= 55 and length == 16)  # Mastercard
        or (2221 <= four <= 2720 and length == 16)  # Mastercard 2-series
        or (two in (34, 37) and length == 15)  # Amex
        or (
            (digits.startswith("6011") or two == 65 or 644 <= int(digits[:3]) <= 649)
            and length in (16, 19)
        )  # Discover
        or ((622126 <= six <= 622925 or two == 62) and 16 <= length <= 19)  # UnionPay
        or ((300 <= int(digits[:3]) <= 305 or two in (36, 38)) and length == 14)  # Diners
        or (3528 <= four <= 3589 and 16 <= length <= 19)  # JCB
        or (four in (2131, 1800) and length == 15)  # JCB (old 15-digit)
        or ((two == 50 or 56 <= two <= 69) and 12 <= length <= 19)  # Maestro
    )


def find_credit_cards(text: str) -> Iterator[Finding]:
    for match in _CARD.finditer(text):
        raw = match.group()
        separators = set(re.findall(r"[ -]", raw))
        if len(separators) > 1:
            continue
        digits = re.sub(r"\D", "", raw)
        if not 12 <= len(digits) <= 19 or len(set(digits)) < 2 or not luhn_valid(digits):
            continue
        if _preceded_by_other_number(text, match.start()):
            continue
        context = text[max(0, match.start() - 40) : match.start()]
        has_word = bool(_CARD_WORDS.search(context))
        if not has_word and not (len(digits) >= 13 and _card_brand_prefix(digits)):
            continue
        yield Finding(
            "CREDIT_CARD",
            match.start(),
            match.end(),
            "regex:credit_card",
            0.95 if has_word else 0.8,
        )


# --- IBAN --------------------------------------------------------------------------------------
# ISO 13616 lengths per country (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2})(\d{2})")
_ALNUM = re.compile(r"[A-Za-z0-9]")


def iban_valid(compact: str) -> bool:
    """ISO 7064 mod-97-10 over the rearranged IBAN, and the country's registered length."""
    compact = compact.upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def find_ibans(text: str) -> Iterator[Finding]:
    for match in _IBAN_START.finditer(text):
        country = match.group(1).upper()
        length = IBAN_LENGTHS.get(country)
        if length is None:
            continue
        # Consume alphanumerics, allowing single spaces between groups (printed form).
        chars: list[str] = []
        position = match.start()
        end = position
        while position < len(text) and len(chars) < length:
            char = text[position]
            if _ALNUM.match(char):
                chars.append(char)
                end = position + 1
            elif (
                char == " "
                and chars
                and position + 1 < len(text)
                and _ALNUM.match(text[position + 1])
            ):
                pass
            else:
                break
            position += 1
        if len(chars) != length or (end < len(text) and _ALNUM.match(text[end])):
            continue
        if iban_valid("".join(chars)):
            yield Finding("IBAN_CODE", match.start(), end, "regex:iban", 0.95)


# --- US SSN ------------------------------------------------------------------------------------
_SSN = re.compile(r"(?<![\w-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\w-])")
_SSN_WORDS = re.compile(r"(?i)\b(?:ssn|ssns|social security|soc\.? sec\.?|sozialversicherung)")


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """Never issued: area 000, 666 or 900-999; group 00; serial 0000."""
    return (
        area not in ("000", "666")
        and not area.startswith("9")
        and group != "00"
        and serial != "0000"
    )


def find_ssns(text: str) -> Iterator[Finding]:
    for match in _SSN.finditer(text):
        area, separator, group, serial = match.groups()
        if not ssn_valid(area, group, serial):
            continue
        context = text[max(0, match.start() - 40) : match.start()]
        has_word = bool(_SSN_WORDS.search(context))
        if not separator and not has_word:
            continue  # nine bare digits are far more often something else
        if _preceded_by_other_number(text, match.start()):
            continue
        other_words = r"(?i)\b(?:phone|tel|fax|mobile|call|license|licence)\b"
        if not has_word and re.search(other_words, context):
            continue
        yield Finding(
            "US_SSN", match.start(), match.end(), "regex:us_ssn", 0.9 if has_word else 0.6
        )


# --- IP addresses ------------------------------------------------------------------------------
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|(?:\d{1,3}\.){3}\d{1,3})(?![\w:])"
)
_VERSION_WORDS = re.compile(r"(?i)(?:\bv|version|release|build|oid|ver\.?)\s*$")


def find_ip_addresses(text: str) -> Iterator[Finding]:
    for match in _IPV4.finditer(text):
        try:
            address = ipaddress.IPv4Address(match.group())
        except ValueError:
            continue
        if address.is_loopback or address.is_unspecified:
            continue  # 127.0.0.1 and 0.0.0.0 identify nobody
        if _VERSION_WORDS.search(text[max(0, match.start() - 12) : match.start()]):
            continue
        yield Finding("IP_ADDRESS", match.start(), match.end(), "regex:ipv4", 0.9)
    for match in _IPV6.finditer(text):
        value = match.group()
        if value.count(":") < 2 or len(value) < 6 or not re.search(r"[0-9A-Fa-f]", value):
            continue
        try:
            address6 = ipaddress.IPv6Address(value)
        except ValueError:
            continue
        if address6.is_loopback or address6.is_unspecified:
            continue
        # "12:30:45"-like times are not valid IPv6; this still skips tiny forms like "a::b"
        # unless they hold at least three groups.
        if value.count(":") < 3 and "::" not in value:
            continue
        yield Finding("IP_ADDRESS", match.start(), match.end(), "regex:ipv6", 0.9)


# --- phone numbers -----------------------------------------------------------------------------
_PHONE = re.compile(
    r"(?<![\w+.-])(?:\+|00)?\(?\d[\d(). \t-]{4,22}\d(?:[ \t]?(?:x|ext\.?|extension)[ \t]?\d{1,6})?"
    r"(?![\w]|\.\d)"
)
_PHONE_WORDS_BEFORE = re.compile(
    r"(?i)\b(?:phone|phones|telephone|tel|tel\.|mobile|mob|cell(?:\s*phone|\s*:|\s+number)|cellphone|fax|call|calls|"
    r"called|calling|desk|office|reach|reached|contact|text|sms|whatsapp|messages?|ring|dial|"
    r"hotline|answering|answer|telefon|handy|rufnummer|mobil|téléphone|tél|anrufen|erreichbar)"
    r"\b[^\n\d]{0,25}$"
)
# A weaker hint ("number", "no.") that counts only when no other kind of number is named.
_PHONE_WEAK_BEFORE = re.compile(r"(?i)\b(?:number|no\.?|nr\.?|nummer)\b[^\n\d]{0,15}$")
_NOT_PHONE_BEFORE = re.compile(
    r"(?i)\b(?:licen[cs]e|passport|account|acct|routing|policy|member|customer|patient|"
    r"employee|student|tax|vat|id|identification|social security|ssn|card|iban|order|invoice|"
    r"serial|ticket|tracking|reference|zip|postal|postcode|registry|register|trial|isrctn|nct|"
    r"patent|grant|pmid|doi)\b[^\n]{0,30}$"
)
_PHONE_WORDS_AFTER = re.compile(
    r"(?i)^[\s,;:()\\-]{0,4}(?:office|home|work|fax|mobile|cell|phone|tel|desk|direct)\b"
)
# North American (NANP) form, (212) 555-0100 / 212-555-0100 / 212.555.0100 [x123].
_NANP = re.compile(
    r"^(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[.-]\d{4}(?:\s?(?:x|ext\.?)\s?\d{1,6})?$"
)
_DATE_LIKE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")


def _phone_parses(candidate: str) -> bool:
    import phonenumbers

    compact = re.sub(r"(?i)\s*(?:x|ext\.?|extension)\s*\d+$", "", candidate)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    regions = [None] if compact.startswith("+") else ["US", "GB", "DE", "FR"]
    for region in regions:
        try:
            number = phonenumbers.parse(compact, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(number):
            return True
    return False


def find_phone_numbers(text: str) -> Iterator[Finding]:
    for match in _PHONE.finditer(text):
        raw = match.group().rstrip(" .-")
        start, end = match.start(), match.start() + len(raw)
        if raw.count("(") != raw.count(")") or re.search(r"[\s.-]{2,}|\n", raw.strip()):
            continue
        if "\n" in raw:
            continue
        digits = re.sub(r"\D", "", re.sub(r"(?i)(?:x|ext\.?|extension)\s?\d+$", "", raw))
        if not 7 <= len(digits) <= 15 or _DATE_LIKE.match(raw) or len(set(digits)) < 3:
            continue
        groups = re.split(r"[\s().-]+", raw.strip("()"))
        if len(groups) == 1 and not raw.startswith("+") and len(digits) > 11:
            continue  # a long bare digit run is an id or a card, not a phone number
        if _preceded_by_other_number(text, start):
            continue
        before = text[max(0, start - 40) : start]
        after = text[end : end + 20]
        has_word = bool(_PHONE_WORDS_BEFORE.search(before) or _PHONE_WORDS_AFTER.search(after))
        if not has_word and _PHONE_WEAK_BEFORE.search(before):
            has_word = not _NOT_PHONE_BEFORE.search(before)
        if not has_word and _NOT_PHONE_BEFORE.search(before):
            continue
        strong = raw.startswith("+") or bool(_NANP.match(raw))
        if has_word or (strong and _phone_parses(raw)):
            yield Finding("PHONE_NUMBER", start, end, "regex:phone", 0.85 if has_word else 0.7)


def find_structured_pii(text: str) -> list[Finding]:
    """Every validated structured-PII candidate (may overlap; the caller resolves overlaps)."""
    findings: list[Finding] = []
    for finder in (
        find_emails,
        find_credit_cards,
        find_ibans,
        find_ssns,
        find_ip_addresses,
        find_phone_numbers,
    ):
        findings.extend(finder(text))
    return findings
