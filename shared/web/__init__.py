"""Web pages served by the services themselves: server-rendered HTML, plain CSS, charts as inline SVG.

`site.Site` is what a service's `pages.py` builds on (sessions, sign-in, layout, i18n, CSS); `charts` draws
SVG; `i18n` holds the words (nl.yaml, en.yaml) and number formats. docs/web.md describes the pages.
"""
