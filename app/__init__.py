"""The Streamlit workbench (run it with ``engram-interp app``). Pages call the library only."""
