"""The Confluence export connector: the pages of a Confluence "Export space -> HTML" folder.

Such an export holds `index.html` (the space overview: its details table and page tree), one
`<Title>_<page id>.html` per page (older exports: `<page id>.html`), the page attachments under
`attachments/<page id>/<attachment id or name>`, and `styles/` and `images/`. Each page file is a
whole Confluence screen: `#breadcrumbs` (the space overview, then every ancestor page),
`#title-text` ("<Space name> : <Title>"), `.page-metadata` ("Created by A, last modified by B on
Mar 01, 2024"), `#main-content` (the page body), then the attachments and comments sections and
the footer.

Per page, one document:

- Id `<source>:pages/<page id>`: the id survives a page rename, which changes the file name. The
  page id comes from the page's own markup (`<meta name="ajs-page-id">`), else the file name's
  suffix, else the page's own attachment links (`attachments/<page id>/...`).

The package, one concern per module:

- `export`: the export's files: the space details of `index.html`, the page files, the
  attachment folders, and reading one file within the size limit.
- `page`: parsing one page's HTML: page id, title, breadcrumbs, metadata, the normalised main
  content, internal links and attachment names.
- `permissions`: the permissions file and the intersection of the restrictions that gives each
  page its access (`page_access`).
- `connector`: the scan (pages, their attachments as documents, quarantine) and
  `ConfluenceExportConnector` with its fingerprint.
"""

from rag_pipeline.lib.connectors.confluence.connector import ConfluenceExportConnector
from rag_pipeline.lib.connectors.confluence.export import (
    ATTACHMENTS_DIR,
    INDEX_FILE,
    SpaceDetails,
    space_details,
)
from rag_pipeline.lib.connectors.confluence.page import PAGE_MIME_TYPE, ParsedPage, parse_page
from rag_pipeline.lib.connectors.confluence.permissions import (
    PERMISSIONS_FILES,
    PageAccess,
    SpacePermissions,
    load_permissions,
    page_access,
    permissions_path,
)

__all__ = [
    "ATTACHMENTS_DIR",
    "INDEX_FILE",
    "PAGE_MIME_TYPE",
    "PERMISSIONS_FILES",
    "ConfluenceExportConnector",
    "PageAccess",
    "ParsedPage",
    "SpaceDetails",
    "SpacePermissions",
    "load_permissions",
    "page_access",
    "parse_page",
    "permissions_path",
    "space_details",
]
