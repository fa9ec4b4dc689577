"""What a run did, for a person: the sample log, the per-token penalty view (``mentor inspect``) and the run
report (``mentor report``)."""
