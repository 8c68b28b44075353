"""The Streamlit analytics dashboard (issue 7): ``streamlit run dashboard/app.py``, or
``dashboard.launch.run(host, port)`` behind ``tallyhub dashboard``. It reads only the read
models in ``projections/`` (``dashboard.queries``); its three ledger reads are listed in
``dashboard.ledger_reads``."""
