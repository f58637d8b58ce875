# ruff: noqa: E501, RUF001
"""Regenerate the deliberately bad and legacy-encoded files of the sample corpus's acme_support.

Deterministic (fixed seeds), so the committed bytes can be rebuilt and checked:

    .venv/bin/python scripts/make_nasty_files.py [acme_support folder]
"""

import random
import sys
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "rag_pipeline/sample_corpus/acme_support"

TCK_0999 = """Ticket: TCK-0999
Subject: Rechnung doppelt abgebucht – “urgent” refund request (Müller & Söhne)
Customer: Müller & Söhne Feinkost GmbH (org_id 12077, Team plan)
Reported by: Jürgen Müller, Geschäftsführer
Priority: P2
Assignee: Bob Okafor
Opened: 2025-11-18 09:12 UTC
Closed: 2025-11-20 14:05 UTC

Description
-----------
The customer’s credit card was charged twice for the November invoice INV-2025-110877:
2 × €540,00 (German number format in the original email). Herr Müller wrote: “Bitte erstatten Sie
die doppelte Zahlung sofort – our café chain runs on thin margins.”

Timeline
--------
11-18 09:12  Ticket opened by e-mail (migrated from the old helpdesk, original encoding Windows-1252).
11-18 09:40  Billing log shows two successful Stripe charges 3 seconds apart: ch_3PqA and ch_3PqB.
             Cause: the payment retry worker and a manual “Pay now” click raced each other.
11-18 10:15  Refund of €540,00 issued for the second charge (re_3PqZ). Refunds take 5–10 business
             days to appear on the card statement.
11-20 14:05  Customer confirmed the refund is pending on the statement. Closed with apology and a
             €50 goodwill credit.

Resolution
----------
Duplicate charge refunded. Engineering bug BILL-1734 added an idempotency key to the “Pay now”
button so that the retry worker and manual payments can no longer both succeed.
"""

TCK_0998 = """Ticket: TCK-0998
Subject: Export CSV shows “Ã©” instead of “é” when opened in Excel
Customer: Café Lumière SARL (org_id 11904, Team plan)
Reported by: Amélie Durand, office manager
Priority: P3
Assignee: Bob Okafor
Opened: 2025-11-12 15:30 UTC
Closed: 2025-11-13 10:02 UTC

Description
-----------
When Amélie opens the project export CSV in Excel on Windows, names like “Hélène Brûlé” appear as
“HÃ©lÃ¨ne BrÃ»lÃ©”. Amounts with the € sign are also garbled.

Timeline
--------
11-12 15:30  Ticket opened (migrated from the old helpdesk, stored as Windows-1252).
11-12 16:05  Reproduced: Acme exports CSV as UTF-8 without a byte order mark (BOM); Excel on Windows
             assumes the ANSI code page when there is no BOM.
11-13 09:45  Workaround sent: in Excel use Data › From Text/CSV and choose “65001: Unicode (UTF-8)”,
             or tick the new export option “Excel-compatible (UTF-8 with BOM)” under Export › Options.
11-13 10:02  Customer confirmed the names and € amounts display correctly. Closed.

Resolution
----------
Not a bug; encoding mismatch in Excel. The “Excel-compatible” export option was released in
version 2025.44 — recommend it to all customers who open exports in Excel.
"""


def main(root: Path) -> None:
    for folder in ("tickets", "exports", "attachments", "legacy"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "tickets/TCK-1000-empty.txt").write_bytes(b"")
    junk = random.Random(42).randbytes(8192)
    assert b"\x00" in junk
    (root / "exports/kb-export.md").write_bytes(junk)

    # big dump: deterministic repetitive ticket log lines
    customers = [
        "Northwind Traders",
        "Bluebird Analytics",
        "Kessler Maschinenbau",
        "Harbor Freight Logistics",
        "Contoso Health",
        "Fabrikam Bank",
        "Pinecrest Schools",
        "Lumen Studio",
        "Orbit Dental",
    ]
    events = [
        "ticket.created",
        "ticket.assigned",
        "ticket.commented",
        "ticket.status_changed",
        "ticket.closed",
    ]
    subjects = [
        "SSO login loop",
        "Webhook delivery failed",
        "Invoice VAT question",
        "HTTP 429 on export",
        "Search results missing",
        "Seat change request",
        "API token rotation",
        "Billing contact change",
    ]
    agents = ["bob", "lena", "marta", "yusuf"]
    target = 5_200_000
    buf = bytearray(
        b"# ticket-dump-2026.txt - export of support ticket events, generated 2026-10-03\n"
    )
    i = 0
    while True:
        day = 1 + (i // 14000) % 28
        month = 1 + (i // 392000) % 9
        line = (
            f"2026-{month:02d}-{day:02d}T{(i // 600) % 24:02d}:{(i // 10) % 60:02d}:{i % 60:02d}Z "
            f"event={events[i % 5]} ticket=TCK-{2000 + (i // 5) % 9000} "
            f'customer="{customers[(i // 5) % 9]}" agent={agents[(i // 5) % 4]} '
            f'priority=P{1 + (i // 5) % 4} subject="{subjects[(i // 5) % 8]}"\n'
        ).encode()
        if len(buf) + len(line) > target:
            break
        buf += line
        i += 1
    pad = target - len(buf)
    buf += (b"#" * (pad - 1) + b"\n") if pad > 0 else b""
    assert len(buf) == target
    (root / "exports/ticket-dump-2026.txt").write_bytes(bytes(buf))

    # vsdx: zip-looking junk
    vs = bytearray(b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00")
    vs += b"[Content_Types].xml"
    vs += random.Random(7).randbytes(300)
    vs += b"PK\x05\x06" + b"\x00" * 18
    (root / "attachments/network-diagram.vsdx").write_bytes(bytes(vs))
    (root / "legacy/TCK-0999-latin1.txt").write_bytes(TCK_0999.encode("cp1252"))
    (root / "legacy/TCK-0998-cp1252.txt").write_bytes(TCK_0998.encode("cp1252"))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ROOT)
