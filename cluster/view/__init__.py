"""``rlfarm view``: a local web page over one run directory, live or finished (``server``), and
the page itself (``page.html``: inline script and SVG charts, nothing fetched from the internet)."""
