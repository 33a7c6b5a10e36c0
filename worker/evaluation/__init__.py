"""`python -m worker eval`: a job kind's real pipeline run over a labelled set in a scratch
database, and a report of what it would publish."""
