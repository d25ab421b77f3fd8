"""`beam-caption report`: totals over an output's Parquet files, and the self-contained HTML
gallery with its small plots.

totals.py computes the report (and writes report.json), text.py prints it with table.py's one
plain-text table layout, thumbnails.py samples the captions and reads their thumbnails,
gallery.py renders the page and plots.py its inline SVG plots.
"""
