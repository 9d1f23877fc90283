"""rtclassify trainer: training, cross-validated evaluation, the report and the shipped models."""
