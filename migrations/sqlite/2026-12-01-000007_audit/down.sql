DROP TRIGGER audit_log_append_only;
DROP TABLE audit_log;
