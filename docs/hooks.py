"""MkDocs hook: the methods page, generated at build time from the registered methods.

``methods.md`` is never written to the source tree: it is rendered by
:func:`sslray.methods.catalogue.as_markdown` from the same catalogue ``sslray methods`` prints, and
added to the build's files here, so the page and the command cannot disagree."""

from __future__ import annotations

from mkdocs.structure.files import File


def on_files(files, config):
    from sslray.methods.catalogue import as_markdown, catalogue

    files.append(File.generated(config, "methods.md", content=as_markdown(catalogue())))
    return files
