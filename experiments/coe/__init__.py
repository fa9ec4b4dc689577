"""CoE on the paper's setting at CPU scale (``mentor bench coe``) and its pretrained tiny base."""
