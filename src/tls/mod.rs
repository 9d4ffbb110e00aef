pub mod compat;
