//! The cliproxy request pipeline.
