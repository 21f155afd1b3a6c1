-- Existing system, level 008: its repository has no 007 or 008 (its second 006 is our 007).
-- Nothing to apply; the number is kept so that 009-012 keep the existing system's numbers.
SELECT 1;
