#!/usr/bin/env python3
"""Generate the PDF policies of the bundled sample corpus.

No third-party PDF library is needed: the script writes minimal but valid
PDF 1.4 files by hand (one Helvetica/Helvetica-Bold Type1 font pair with
WinAnsiEncoding, text drawn with BT/ET and Tj operators, a correct xref table).

Usage:
    python scripts/make_sample_pdf.py [output_dir]

The default output directory is rag_pipeline/sample_corpus/acme_policies.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

PAGE_WIDTH = 612  # US Letter, points
PAGE_HEIGHT = 792
MARGIN_LEFT = 72
MARGIN_TOP = 72
MARGIN_BOTTOM = 72
FONT_SIZE = 10
HEADING_SIZE = 12
TITLE_SIZE = 16
LEADING = 14
WRAP_WIDTH = 90
LINES_PER_PAGE = (PAGE_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM) // LEADING


@dataclass
class Line:
    """One output line: text plus the font resource and size to draw it with."""

    text: str
    font: str = "F1"
    size: int = FONT_SIZE


@dataclass
class Document:
    title: str
    subject: str
    pages: list[list[str]] = field(default_factory=list)


def escape_pdf_string(text: str) -> bytes:
    """Encode text as WinAnsi (cp1252) and escape it for a PDF literal string."""
    raw = text.encode("cp1252", errors="replace")
    out = bytearray()
    for byte in raw:
        if byte in (0x28, 0x29, 0x5C):  # ( ) backslash
            out += b"\\" + bytes([byte])
        elif byte < 0x20 or byte > 0x7E:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return bytes(out)


def layout_block(block: str) -> list[Line]:
    """Turn one source paragraph into wrapped lines.

    Paragraphs starting with '# ' are the document title, '## ' a section
    heading; everything else is body text, re-wrapped at WRAP_WIDTH characters.
    """
    block = block.strip("\n")
    if block.startswith("# "):
        return [Line(block[2:].strip(), "F2", TITLE_SIZE), Line("")]
    if block.startswith("## "):
        return [Line(block[3:].strip(), "F2", HEADING_SIZE)]
    # Hard line breaks inside a source paragraph are not significant: join and re-wrap.
    paragraph = " ".join(part.strip() for part in block.splitlines())
    lines = [Line(w) for w in textwrap.wrap(paragraph, width=WRAP_WIDTH)] or [Line("")]
    lines.append(Line(""))
    return lines


def paginate(source_pages: list[str]) -> list[list[Line]]:
    """Lay out explicit source pages, splitting any page that overflows."""
    pages: list[list[Line]] = []
    for source in source_pages:
        current: list[Line] = []
        for block in source.strip().split("\n\n"):
            for line in layout_block(block):
                if len(current) >= LINES_PER_PAGE - 2:  # keep room for the footer
                    pages.append(current)
                    current = []
                current.append(line)
        while current and not current[-1].text:
            current.pop()
        pages.append(current)
    return pages


def content_stream(lines: list[Line], page_no: int, page_count: int, footer: str) -> bytes:
    parts: list[bytes] = [b"BT", b"%d TL" % LEADING]
    parts.append(b"%d %d Td" % (MARGIN_LEFT, PAGE_HEIGHT - MARGIN_TOP))
    current_font: tuple[str, int] | None = None
    for line in lines:
        if (line.font, line.size) != current_font:
            parts.append(b"/%s %d Tf" % (line.font.encode(), line.size))
            current_font = (line.font, line.size)
        parts.append(b"(" + escape_pdf_string(line.text) + b") Tj T*")
    parts.append(b"ET")
    footer_text = f"{footer} - Page {page_no} of {page_count}"
    parts += [
        b"BT",
        b"/F1 8 Tf",
        b"%d %d Td" % (MARGIN_LEFT, MARGIN_BOTTOM // 2),
        b"(" + escape_pdf_string(footer_text) + b") Tj",
        b"ET",
    ]
    return b"\n".join(parts) + b"\n"


def build_pdf(doc: Document) -> bytes:
    """Serialise a document into PDF 1.4 bytes with a correct xref table."""
    pages = paginate(doc.pages)
    page_count = len(pages)
    # Object numbering: 1 catalog, 2 pages, 3 F1, 4 F2, 5 info, then page/content pairs.
    first_page_obj = 6
    page_ids = [first_page_obj + 2 * i for i in range(page_count)]
    objects: dict[int, bytes] = {}
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    kids = b" ".join(b"%d 0 R" % pid for pid in page_ids)
    objects[2] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, page_count)
    for obj_id, base in ((3, b"Helvetica"), (4, b"Helvetica-Bold")):
        objects[obj_id] = (
            b"<< /Type /Font /Subtype /Type1 /BaseFont /" + base + b" /Encoding /WinAnsiEncoding >>"
        )
    objects[5] = (
        b"<< /Title ("
        + escape_pdf_string(doc.title)
        + b") /Subject ("
        + escape_pdf_string(doc.subject)
        + b") /Author (Acme Corp) /Producer (make_sample_pdf.py) >>"
    )
    for index, (page_id, lines) in enumerate(zip(page_ids, pages, strict=True), start=1):
        stream = content_stream(lines, index, page_count, doc.title)
        objects[page_id] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] "
            b"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents %d 0 R >>"
            % (PAGE_WIDTH, PAGE_HEIGHT, page_id + 1)
        )
        objects[page_id + 1] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream"

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for obj_id in sorted(objects):
        offsets[obj_id] = len(out)
        out += b"%d 0 obj\n" % obj_id + objects[obj_id] + b"\nendobj\n"
    xref_offset = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n" % size
    out += b"0000000000 65535 f \n"
    for obj_id in range(1, size):
        out += b"%010d 00000 n \n" % offsets[obj_id]
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R >>\n" % size
    out += b"startxref\n%d\n%%%%EOF\n" % xref_offset
    return bytes(out)


INFOSEC_PAGES = [
    """
# Acme Corp Information Security Policy

Document ID: POL-SEC-001. Version 3.2, effective 1 March 2026. Policy owner: Priya Raman, Chief
Information Security Officer. Approved by the Acme Risk Committee on 12 February 2026. This policy
is reviewed every twelve months or after any Severity 1 security incident.

## 1. Purpose and Scope

1.1 This policy sets the minimum security requirements for all Acme information systems, including
the Acme Cloud platform, internal tooling, corporate laptops and mobile devices.

1.2 It applies to all employees, contractors, interns and third parties who access Acme data or
systems. Customer-managed environments are out of scope except where Acme staff access them.

1.3 Exceptions must be requested through the SECX form in the service desk, must name a compensating
control, and are granted for at most 180 days by the CISO.

## 2. Data Classification

2.1 All Acme data belongs to one of four classes: Public, Internal, Confidential and Restricted.

2.2 Restricted data includes customer payment data, authentication secrets, private keys, and any
personal data of customers exported from production. Restricted data must be encrypted at rest with
AES-256 and in transit with TLS 1.2 or higher.

2.3 Confidential data (for example contracts, roadmap documents, salary data) may be shared only
with named recipients who have a business need. Bulk exports of Confidential data require manager
approval recorded in the ticket.

2.4 Data owners must label documents in the header or metadata. Unlabelled documents are treated as
Internal.
""",
    """
## 3. Access Control

3.1 Access follows least privilege. Access to production is granted through the Warden access
broker only, with just-in-time sessions that expire after 4 hours.

3.2 Multi-factor authentication is mandatory for email, SSO, VPN, source control and the cloud
consoles. Hardware security keys (FIDO2) are required for all engineers with production access.
SMS codes are not an accepted second factor.

3.3 Access reviews are performed quarterly by each system owner. Accounts unused for 45 days are
disabled automatically; leavers are deprovisioned within 4 business hours of their last working
day.

3.4 Shared accounts are prohibited except for documented break-glass accounts, whose credentials are
sealed in the Vault break-glass path and rotated after every use.

## 4. Endpoint Security

4.1 Company laptops must run full-disk encryption (FileVault or BitLocker), the CrowdStrike sensor
and automatic OS updates. Critical patches must be installed within 7 days of release.

4.2 Screens lock automatically after 5 minutes of inactivity.

4.3 Lost or stolen devices must be reported to security@acme.example within 1 hour of discovery so
the device can be wiped remotely.

## 5. Secure Development

5.1 All code changes require review by at least one engineer other than the author. Changes to
authentication, billing or encryption code require review by a member of the AppSec group.

5.2 Secrets must never be committed to repositories. The pre-commit secret scanner is mandatory and
any detected secret is treated as compromised and rotated within 24 hours.

5.3 Third-party dependencies with a known vulnerability rated CVSS 9.0 or higher must be patched
within 72 hours; CVSS 7.0 to 8.9 within 14 days.
""",
    """
## 6. Logging and Monitoring

6.1 Security-relevant logs (authentication, privilege changes, data exports) are shipped to the
central SIEM and retained for 400 days. Application logs are retained for 30 days.

6.2 Alerts rated High are triaged by the security on-call engineer within 30 minutes, 24x7.

## 7. Incident Reporting

7.1 Anyone who suspects a security incident must report it immediately in the #sec-incident Slack
channel or by calling the security hotline at extension 7400. Do not investigate on your own.

7.2 Confirmed incidents involving personal data are assessed by Legal within 24 hours to decide
whether regulators must be notified within the 72-hour GDPR window.

## 8. Vendors and Third Parties

8.1 Vendors processing Confidential or Restricted data must pass a security assessment before a
contract is signed, and are reassessed every 24 months.

## 9. Compliance and Enforcement

9.1 Acme maintains SOC 2 Type II and ISO 27001 certifications. Internal audits of this policy run
twice a year.

9.2 Violations may result in revoked access and disciplinary action up to and including
termination of employment or contract.

9.3 Questions about this policy go to the Security team at security@acme.example.
""",
]

TRAVEL_PAGES = [
    """
# Acme Corp Travel and Expense Policy

Document ID: POL-FIN-004. Version 2.1, effective 1 January 2026. Policy owner: Marcus Oyelaran,
VP Finance. Applies to all Acme employees travelling or spending on behalf of the company.

## 1. Booking Travel

1.1 All flights, hotels and rail travel must be booked through the Navan travel portal. Bookings
made elsewhere are reimbursed only with written approval from your budget holder.

1.2 Flights must be booked at least 14 days in advance where possible. Economy class is standard.
Premium economy is allowed for flights longer than 6 hours; business class requires VP approval
and is allowed only for flights longer than 9 hours.

1.3 Hotel nightly caps (including taxes): EUR 180 in most European cities, EUR 240 in London,
Paris and Zurich, USD 275 in New York and San Francisco, USD 190 elsewhere in North America.

## 2. Meals and Per Diem

2.1 While travelling, meals are reimbursed at actual cost up to a daily cap of EUR 75 (USD 85).
Alcohol is not reimbursable except at approved client dinners.

2.2 Client entertainment above EUR 150 per attendee requires prior approval from a director and
the names of all attendees on the expense report.

## 3. Ground Transport

3.1 Public transport, taxis and ride-hailing are reimbursed. Car rental is allowed when it is
cheaper than alternatives or when travelling with three or more colleagues. Personal car mileage
is reimbursed at EUR 0.30 per km.
""",
    """
## 4. Submitting Expenses

4.1 Expenses are submitted in Expensify within 30 days of the expense date. Claims older than 90
days are not reimbursed.

4.2 An itemised receipt is required for every expense above EUR 25. Lost receipts must be
replaced by a signed missing-receipt declaration, limited to two per calendar year.

4.3 Approved expenses are paid with the next payroll run when approved before the 20th of the
month.

## 5. Corporate Cards

5.1 Employees who travel more than four times per year may request an Amex corporate card with a
monthly limit of EUR 5,000. Personal use of the corporate card is prohibited.

## 6. Non-Reimbursable Items

6.1 The following are never reimbursed: fines and parking tickets, upgrades paid for personal
comfort, minibar charges, in-flight entertainment, lost luggage not reported to the airline, and
travel insurance (Acme already provides global travel insurance through its group policy).

## 7. Approvals

7.1 Trips up to EUR 2,000 in total are approved by the direct manager; trips above EUR 2,000 need
the budget holder as well; international trips longer than 10 days need VP approval.

7.2 Questions go to expenses@acme.example or the #ask-finance Slack channel.
""",
]

DOCUMENTS: dict[str, Document] = {
    "information-security-policy.pdf": Document(
        title="Acme Information Security Policy",
        subject="POL-SEC-001 information security",
        pages=INFOSEC_PAGES,
    ),
    "travel-expense-policy.pdf": Document(
        title="Acme Travel and Expense Policy",
        subject="POL-FIN-004 travel and expenses",
        pages=TRAVEL_PAGES,
    ),
}


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    out_dir = (
        Path(argv[1])
        if len(argv) > 1
        else root / "rag_pipeline" / "sample_corpus" / "acme_policies"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for name, doc in DOCUMENTS.items():
        data = build_pdf(doc)
        (out_dir / name).write_bytes(data)
        written.append(f"{name} ({len(paginate(doc.pages))} pages, {len(data)} bytes)")
    print("wrote " + ", ".join(written) + f" to {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
