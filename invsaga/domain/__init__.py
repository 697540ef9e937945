"""Pure domain model: stock lines, outcomes and the one error hierarchy. No I/O lives here."""
