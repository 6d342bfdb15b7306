"""integrations_pipeline: fresh, correct tables of SaaS users, contacts and events, orchestrated by Dagster."""
