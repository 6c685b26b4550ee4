"""Streamlit dashboard: UI only. Everything it shows comes from ``medmodels`` calls."""
