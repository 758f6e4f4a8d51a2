"""Read-model sinks for projections: SQLite (standard library) and PostgreSQL (asyncpg)."""
