"""The Streamlit analytics dashboard (issue 7). It will read only the read models in
``projections/``; nothing here yet."""
