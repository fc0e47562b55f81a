// Table: a plain-text table with aligned columns, as poolctl prints them.
#ifndef POOLD_CLIENT_TABLE_H_
#define POOLD_CLIENT_TABLE_H_

#include <string>
#include <vector>

namespace poold::client {

// Example:
//
//   Table table({{"pool", Table::kLeft}, {"blocks"}});
//   table.AddRow({"small", "42"});
//   std::cout << table.Render();
//
// prints
//
//   pool   blocks
//   small      42
class Table {
 public:
  enum Align { kLeft, kRight };
  struct Column {
    std::string name;
    Align align = kRight;
  };

  explicit Table(std::vector<Column> columns);

  // Adds a row. Missing trailing cells are empty; cells beyond the last
  // column are dropped.
  void AddRow(std::vector<std::string> cells);

  size_t rows() const { return rows_.size(); }

  // The header and the rows, one line each, columns two spaces apart,
  // widths from the widest cell (counted in bytes: cells are ASCII).
  // Trailing spaces are trimmed.
  std::string Render() const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace poold::client

#endif  // POOLD_CLIENT_TABLE_H_
